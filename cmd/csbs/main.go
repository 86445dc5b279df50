// Command csbs is the Cloud Server Backup Service: `csbs serve` runs the
// CSBS v1 API with its workers, `csbs demo` runs it on a small demo server
// whose disk images it creates, and `csbs repo …` works on a backup
// repository directly.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/repository"
)

func main() {
	runtime.GOMAXPROCS(repository.Procs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0)))
	root := &cobra.Command{
		Use:           "csbs",
		Short:         "Cloud Server Backup Service: the CSBS v1 API, backed by a deduplicating, encrypted repository",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), demoCmd(), repoCmd(), mountCmd(), exportCmd(), instantRecoverCmd())
	root.AddCommand(hashPasswordCmd())
	root.AddCommand(cliCommands()...)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "csbs:", err)
		os.Exit(1)
	}
}
