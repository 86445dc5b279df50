// Package retention decides which automatic backups of a server a backup
// policy keeps, after the rules of the CSBS reference:
//
//   - permanent: every backup is kept, whatever else is set;
//   - none of permanent, max_backups and retention_duration_days set: every
//     backup is kept;
//   - max_backups N: the N newest are kept; retention_duration_days D: the
//     backups younger than D days are kept; when both are set a backup must
//     pass both;
//   - day/week/month/year_backups N (long-term rules, "applied together
//     with max_backups"): the newest backup of each of the N latest days
//     (weeks, months, years) that have backups is kept as well, days and
//     weeks counted in the policy's time zone. The long-term rules add to
//     what the other rules keep (the union).
//
// -1 and 0 both mean "no limit" for max_backups and retention_duration_days:
// a rule that deletes every backup as soon as it is made would protect
// nothing.
package retention

import (
	"fmt"
	"sort"
	"strconv"
	"time"
)

// Rule is the retention part of a scheduled operation.
type Rule struct {
	Permanent     bool
	MaxBackups    int // <= 0: no limit
	RetentionDays int // <= 0: no limit
	// Long-term rules: how many days (weeks, months, years) keep their
	// newest backup; 0 = rule not used.
	Day, Week, Month, Year int
	// Zone is where days begin; nil = UTC.
	Zone *time.Location
}

// Backup is what the rules look at.
type Backup struct {
	ID        string
	CreatedAt time.Time
}

// Keep splits backups into those the rule keeps and those it deletes, each
// newest first. now is the clock.
func Keep(r Rule, backups []Backup, now time.Time) (keep, drop []Backup) {
	bs := append([]Backup(nil), backups...)
	sort.SliceStable(bs, func(i, j int) bool {
		if !bs[i].CreatedAt.Equal(bs[j].CreatedAt) {
			return bs[i].CreatedAt.After(bs[j].CreatedAt)
		}
		return bs[i].ID > bs[j].ID
	})
	if r.Permanent || (r.MaxBackups <= 0 && r.RetentionDays <= 0) {
		return bs, nil
	}
	kept := map[int]bool{}
	for i, b := range bs {
		ok := true
		if r.MaxBackups > 0 && i >= r.MaxBackups {
			ok = false
		}
		if r.RetentionDays > 0 && now.Sub(b.CreatedAt) >= time.Duration(r.RetentionDays)*24*time.Hour {
			ok = false
		}
		kept[i] = ok
	}
	zone := r.Zone
	if zone == nil {
		zone = time.UTC
	}
	for _, p := range []struct {
		n      int
		period func(time.Time) string
	}{
		{r.Day, func(t time.Time) string { return t.Format("2006-01-02") }},
		{r.Week, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{r.Month, func(t time.Time) string { return t.Format("2006-01") }},
		{r.Year, func(t time.Time) string { return t.Format("2006") }},
	} {
		if p.n <= 0 {
			continue
		}
		seen := map[string]bool{}
		for i, b := range bs { // newest first: the first of a period is its newest
			k := p.period(b.CreatedAt.In(zone))
			if seen[k] {
				continue
			}
			if len(seen) == p.n {
				break
			}
			seen[k] = true
			kept[i] = true
		}
	}
	for i, b := range bs {
		if kept[i] {
			keep = append(keep, b)
		} else {
			drop = append(drop, b)
		}
	}
	return keep, drop
}

// ParseZone reads a time zone of the form UTC+08:00 or UTC-03:30 (UTC alone
// is UTC+00:00).
func ParseZone(s string) (*time.Location, error) {
	bad := fmt.Errorf("time zone %q: want UTC+HH:MM or UTC-HH:MM, for example UTC+08:00", s)
	if s == "UTC" {
		return time.UTC, nil
	}
	if len(s) != 9 || s[:3] != "UTC" || (s[3] != '+' && s[3] != '-') || s[6] != ':' {
		return nil, bad
	}
	h, err1 := strconv.Atoi(s[4:6])
	m, err2 := strconv.Atoi(s[7:9])
	if err1 != nil || err2 != nil || h > 14 || m > 59 || (h == 14 && m > 0) {
		return nil, bad
	}
	off := (h*60 + m) * 60
	if s[3] == '-' {
		off = -off
	}
	return time.FixedZone(s, off), nil
}
