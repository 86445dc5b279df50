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

	"github.com/csbs/csbs/internal/schedule"
)

// TestConsoleBrowser drives the console in a real browser (Debian's
// headless Chromium): sign in, back up a server and watch the progress bar
// reach 100% with the status available (moved by the console's own
// JavaScript under its strict CSP); restore it and compare the disk's
// hash; build a policy in the schedule builder and check the fire times
// it shows against the scheduler's own; see a failed backup's reason in
// the operation logs; sign out. Screenshots go to $CSBS_SCREENSHOTS when
// set.
func TestConsoleBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CSBS_REQUIRE_BROWSER") == "1" {
			t.Fatal("chromium not found and CSBS_REQUIRE_BROWSER=1 (Debian package chromium)")
		}
		t.Skip("chromium not found (Debian package chromium); scripts/test.sh installs it")
	}
	e, paths := consoleEnv(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 150*time.Second)
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
	waitFinal := func(what string) {
		if err := pollAcrossReloads(ctx, final); err != nil {
			t.Fatalf("%s: the backup page did not show the finished backup (bar at 100%%, available): %v", what, err)
		}
	}
	waitFinal("backup")
	shot("backup")

	// Restore it over a scribbled disk, as a user would: the link on the
	// backup's page, the disk mapping (checked before anything is
	// written), the bar until it is done; the disk is the backup's again.
	want := hashes(t, paths)
	scribble(t, paths[0])
	do("restore page", chromedp.Click(chromedp.Search(`//a[contains(text(), "Restore this backup")]`)),
		chromedp.WaitVisible(chromedp.Search(`//button[text()="Restore"]`)))
	shot("restore")
	do("restore", chromedp.Click(chromedp.Search(`//button[text()="Restore"]`)), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	waitFinal("restore")
	sameHashes(t, "the disk after a restore from the browser", paths, want)

	// A policy from the schedule builder: the fire times the page shows
	// are the scheduler's own.
	do("policy builder", chromedp.Navigate(e.base+"/console/policies"), chromedp.WaitVisible(chromedp.ID("pname")),
		chromedp.SendKeys(chromedp.ID("pname"), "browser-weekly"), chromedp.Click(chromedp.ID("day-TU")), chromedp.Click(chromedp.ID("day-FR")),
		chromedp.SetValue(chromedp.ID("ptime"), "04:15"),
		chromedp.Click(chromedp.Search(`//button[text()="Create policy"]`)), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr")].
		filter(r => r.textContent.includes("browser-weekly")).
		flatMap(r => [...r.querySelectorAll("time[datetime]")].map(t => t.getAttribute("datetime")))`))
	if err != nil {
		t.Fatal(err)
	}
	sched, err := schedule.Parse(schedule.Pattern("FREQ=WEEKLY;BYDAY=TU,FR;BYHOUR=4;BYMINUTE=15"))
	if err != nil {
		t.Fatal(err)
	}
	var fires []string
	for at := time.Now(); len(fires) < 10; {
		at = sched.Next(at)
		fires = append(fires, at.UTC().Format(time.RFC3339))
	}
	if strings.Join(shown, " ") != strings.Join(fires, " ") {
		t.Errorf("the builder's policy shows fire times %v; the scheduler's are %v", shown, fires)
	}
	shot("policies")

	// A backup that fails (the disk's file is gone): its reason in the
	// operation logs.
	moved := paths[0] + ".away"
	if err := os.Rename(paths[0], moved); err != nil {
		t.Fatal(err)
	}
	do("failing backup", chromedp.Navigate(e.base+"/console/servers"), chromedp.WaitVisible(chromedp.Search(`//button[text()="Back up now"]`)),
		chromedp.Click(chromedp.Search(`//button[text()="Back up now"]`)), chromedp.WaitVisible(chromedp.CSS("progress")))
	failed := `(async () => { const r = await fetch("/console/jobs?status=error"); const t = await r.text();
		return t.includes(` + "`" + `class="error">` + "`" + `) && t.includes("` + filepath.Base(paths[0]) + `"); })()`
	if err := pollAcrossReloads(ctx, failed); err != nil {
		t.Fatalf("the failed backup's reason never showed in the operation logs: %v", err)
	}
	do("operation logs", chromedp.Navigate(e.base+"/console/jobs?status=error"), chromedp.WaitVisible(chromedp.CSS("td.error")))
	reason, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("td.error")))
	if err != nil || !strings.Contains(reason, filepath.Base(paths[0])) {
		t.Errorf("operation logs reason %q (%v); want it to name the missing disk file", reason, err)
	}
	shot("jobs")
	if err := os.Rename(moved, paths[0]); err != nil {
		t.Fatal(err)
	}
	do("overview", chromedp.Navigate(e.base+"/console/overview"), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	shot("overview")

	// Readable at 390 px: nothing wider than the screen on the pages.
	for _, page := range []string{"/console/overview", "/console/servers", "/console/backups", "/console/policies"} {
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

// pollAcrossReloads polls expr in the page until it is true (60 s at
// most). A poll that the page cut short by navigating (the backup page
// reloads itself when its job ends: "Inspected target navigated or
// closed", or its context gone) starts again, up to five times.
func pollAcrossReloads(ctx context.Context, expr string) error {
	for try := 0; ; try++ {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(60*time.Second)))
		if err == nil || try == 5 || !strings.Contains(err.Error(), "context") && !strings.Contains(err.Error(), "navigated") {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
