package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/auth"
)

func hashPasswordCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-password",
		Short: "Print the bcrypt hash of a password, for auth.users[].password_hash",
		Long: `Read a password from standard input (without echo on a terminal) and print
its bcrypt hash, for the password_hash of a user in auth.users of the config.
The password is never taken from the command line, where other users of the
machine could see it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(os.Stdin, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			h, err := auth.HashPassword(pw)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), h)
			return nil
		},
	}
}

// readPassword reads one line from f; on a terminal it prompts and turns
// the echo off while the password is typed.
func readPassword(f *os.File, prompt io.Writer) (string, error) {
	fd := int(f.Fd())
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		fmt.Fprint(prompt, "Password: ")
		noEcho := *t
		noEcho.Lflag &^= unix.ECHO
		noEcho.Lflag |= unix.ICANON | unix.ISIG
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
			return "", err
		}
		defer func() {
			unix.IoctlSetTermios(fd, unix.TCSETS, t)
			fmt.Fprintln(prompt)
		}()
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("no password on standard input")
	}
	return pw, nil
}
