package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestConsoleBrowser drives the console in a real browser (Debian's
// headless Chromium): sign in, back up a server and watch the progress bar
// reach 100% with the status available (moved by the console's own
// JavaScript under its strict CSP), then sign out. Screenshots go to
// $CSBS_SCREENSHOTS when set.
func TestConsoleBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CSBS_REQUIRE_BROWSER") == "1" {
			t.Fatal("chromium not found and CSBS_REQUIRE_BROWSER=1 (Debian package chromium)")
		}
		t.Skip("chromium not found (Debian package chromium); scripts/test.sh installs it")
	}
	e, _ := consoleEnv(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	shot := func(name string) {
		dir := os.Getenv("CSBS_SCREENSHOTS")
		if dir == "" {
			return
		}
		var b []byte
		var err error
		for try := 0; try < 10; try++ { // not while the page reloads
			if b, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		os.WriteFile(filepath.Join(dir, name+".png"), b, 0o644)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	do("sign in", chromedp.Navigate(e.base+"/console/"), chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("user"), "alice"), chromedp.SendKeys(chromedp.ID("password"), "alice-pw-1234"))
	shot("signin")
	do("submit", chromedp.Submit(chromedp.ID("password")), chromedp.WaitVisible(chromedp.Search(`//button[text()="Back up now"]`)))
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	shot("servers")
	do("back up now", chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "browser-backup"),
		chromedp.Click(chromedp.Search(`//button[text()="Back up now"]`)), chromedp.WaitVisible(chromedp.CSS("progress")))
	// console.js polls the progress and moves the bar; when the backup is
	// done it reloads the page once to show sizes and disks. Wait for that
	// final page (a poll that runs across the reload loses its page: poll
	// again).
	final := `document.readyState === "complete" && document.querySelector(".detail[data-final]") !== null &&
		document.querySelector("span.status").textContent.trim() === "available" &&
		document.querySelector("progress").value === 100 && document.body.textContent.includes("saved by deduplication")`
	for try := 0; ; try++ {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](final, chromedp.WithPollingTimeout(60*time.Second)))
		if err == nil {
			break
		}
		if try == 5 || !strings.Contains(err.Error(), "context") && !strings.Contains(err.Error(), "navigated") {
			t.Fatalf("the backup page did not show the finished backup (bar at 100%%, available): %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	shot("backup")
	// Readable at 390 px: nothing wider than the screen on the pages.
	for _, page := range []string{"/console/servers", "/console/backups", "/console/policies"} {
		do("narrow "+page, chromedp.EmulateViewport(390, 844), chromedp.Navigate(e.base+page), chromedp.WaitVisible(chromedp.CSS("h1")))
		wide, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
		if err != nil {
			t.Fatal(err)
		}
		if wide {
			t.Errorf("%s is wider than a 390 px screen", page)
		}
	}
	shot("narrow")
	do("wide again", chromedp.EmulateViewport(1280, 900))
	do("sign out", chromedp.Click(chromedp.Search(`//button[text()="Sign out"]`)), chromedp.WaitVisible(chromedp.ID("password")))
	if !strings.Contains(title, "Servers") {
		t.Errorf("title after sign-in %q, want the servers page", title)
	}
}
