// Package schedule reads the trigger patterns of CSBS backup policies and
// computes when they fire.
//
// A pattern is iCalendar text (RFC 5545) holding one VEVENT with one RRULE:
//
//	BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n
//
// CSBS accepts only FREQ (DAILY or WEEKLY), BYDAY (MO…SU), BYHOUR (0–23) and
// BYMINUTE (0–59); times are UTC. A pattern may not fire more than 24 times
// a day, nor twice within an hour (also across midnight). The recurrence
// itself is computed by github.com/teambition/rrule-go.
package schedule

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/teambition/rrule-go"
)

// Limits of the reference.
const (
	MaxPatternLen = 10240
	MaxPerDay     = 24
	MinInterval   = time.Hour
)

// Schedule is a validated pattern.
type Schedule struct {
	pattern string
	opt     rrule.ROption
}

// Error is a refusal of a pattern; its message names the problem.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func refuse(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// Parse validates pattern with the CSBS limits. Its errors are *Error.
func Parse(pattern string) (*Schedule, error) {
	if len(pattern) > MaxPatternLen {
		return nil, refuse("pattern is %d characters long; at most %d are allowed", len(pattern), MaxPatternLen)
	}
	rule, err := rruleLine(pattern)
	if err != nil {
		return nil, err
	}
	rule, err = checkParts(rule)
	if err != nil {
		return nil, err
	}
	opt, err := rrule.StrToROption(rule)
	if err != nil {
		return nil, refuse("RRULE %q: %v", rule, err)
	}
	opt.Bysecond = []int{0}
	s := &Schedule{pattern: pattern, opt: *opt}
	if err := s.checkSpacing(); err != nil {
		return nil, err
	}
	return s, nil
}

// rruleLine returns the value of the RRULE line of a
// VCALENDAR/VEVENT/RRULE text, refusing any other content.
func rruleLine(pattern string) (string, error) {
	lines := strings.Split(strings.ReplaceAll(pattern, "\r\n", "\n"), "\n")
	want := []string{"BEGIN:VCALENDAR", "BEGIN:VEVENT", "RRULE:", "END:VEVENT", "END:VCALENDAR"}
	var got []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			got = append(got, l)
		}
	}
	if len(got) != len(want) {
		return "", refuse("pattern must be BEGIN:VCALENDAR, BEGIN:VEVENT, one RRULE line, END:VEVENT, END:VCALENDAR (one per line); got %d lines", len(got))
	}
	var rule string
	for i, w := range want {
		l := got[i]
		if w == "RRULE:" {
			if !strings.HasPrefix(strings.ToUpper(l), w) {
				return "", refuse("line %d of the pattern must be the RRULE, got %q", i+1, clip(l))
			}
			rule = l[len(w):]
			continue
		}
		if !strings.EqualFold(l, w) {
			return "", refuse("line %d of the pattern must be %s, got %q", i+1, w, clip(l))
		}
	}
	return rule, nil
}

// checkParts allows only FREQ=DAILY|WEEKLY, BYDAY, BYHOUR and BYMINUTE, each
// once, with values in range; BYHOUR and BYMINUTE are required, and BYDAY
// for WEEKLY. It returns the rule upper-cased without spaces, as the
// recurrence library reads it.
func checkParts(rule string) (string, error) {
	rule = strings.ToUpper(strings.ReplaceAll(rule, " ", ""))
	parts := map[string]string{}
	for _, p := range strings.Split(rule, ";") {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || v == "" {
			return "", refuse("RRULE part %q is not NAME=VALUE", clip(p))
		}
		switch k {
		case "FREQ", "BYDAY", "BYHOUR", "BYMINUTE":
		default:
			return "", refuse("RRULE part %s is not supported: only FREQ, BYDAY, BYHOUR and BYMINUTE are", clip(k))
		}
		if _, dup := parts[k]; dup {
			return "", refuse("RRULE part %s appears more than once", k)
		}
		parts[k] = v
	}
	switch f := strings.ToUpper(parts["FREQ"]); f {
	case "DAILY", "WEEKLY":
	case "":
		return "", refuse("RRULE has no FREQ: use FREQ=DAILY or FREQ=WEEKLY")
	default:
		return "", refuse("FREQ=%s is not supported: use DAILY or WEEKLY", clip(f))
	}
	if d, ok := parts["BYDAY"]; ok {
		seen := map[string]bool{}
		for _, day := range strings.Split(d, ",") {
			day = strings.ToUpper(strings.TrimSpace(day))
			switch day {
			case "MO", "TU", "WE", "TH", "FR", "SA", "SU":
			default:
				return "", refuse("BYDAY value %q is not one of MO, TU, WE, TH, FR, SA, SU", clip(day))
			}
			if seen[day] {
				return "", refuse("BYDAY lists %s twice", day)
			}
			seen[day] = true
		}
	} else if strings.EqualFold(parts["FREQ"], "WEEKLY") {
		return "", refuse("FREQ=WEEKLY needs BYDAY (the days of the week to back up on)")
	}
	hours, err := ints(parts, "BYHOUR", 23)
	if err != nil {
		return "", err
	}
	minutes, err := ints(parts, "BYMINUTE", 59)
	if err != nil {
		return "", err
	}
	if n := hours * minutes; n > MaxPerDay {
		return "", refuse("the pattern fires %d times a day (%d hours × %d minutes); at most %d are allowed", n, hours, minutes, MaxPerDay)
	}
	return rule, nil
}

// ints checks a list of whole numbers 0…max of part k and returns how many
// distinct values it has.
func ints(parts map[string]string, k string, max int) (int, error) {
	v, ok := parts[k]
	if !ok {
		return 0, refuse("RRULE has no %s: the time of day (UTC) is required", k)
	}
	seen := map[int]bool{}
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > max {
			return 0, refuse("%s value %q is not a whole number from 0 to %d", k, clip(s), max)
		}
		if seen[n] {
			return 0, refuse("%s lists %d twice", k, n)
		}
		seen[n] = true
	}
	return len(seen), nil
}

// checkSpacing refuses two fire times less than MinInterval apart,
// looking at two weeks of fire times so that every weekday and every
// midnight are covered.
func (s *Schedule) checkSpacing() error {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) // a Monday
	times := s.rule(start).Between(start, start.AddDate(0, 0, 15), true)
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d < MinInterval {
			return refuse("fire times %s and %s are %s apart; the interval must be at least 1 hour",
				times[i-1].Format("Mon 15:04"), times[i].Format("Mon 15:04"), d)
		}
	}
	if len(times) == 0 {
		return refuse("the pattern never fires")
	}
	return nil
}

// rule is the recurrence starting at dtstart. Every rule allowed here
// repeats with a period of a day or a week whatever DTSTART is (BYHOUR,
// BYMINUTE and, for WEEKLY, BYDAY are required), so a DTSTART shortly before
// the time asked about keeps the iteration short.
func (s *Schedule) rule(dtstart time.Time) *rrule.RRule {
	o := s.opt
	o.Dtstart = dtstart
	r, err := rrule.NewRRule(o)
	if err != nil {
		panic("schedule: validated rule refused: " + err.Error()) // Parse checked every value
	}
	return r
}

// Next returns the first fire time strictly after t.
func (s *Schedule) Next(t time.Time) time.Time {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return s.rule(day.AddDate(0, 0, -1)).After(t, false)
}

// Prev returns the last fire time at or before t.
func (s *Schedule) Prev(t time.Time) time.Time {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return s.rule(day.AddDate(0, 0, -8)).Before(t, true)
}

// Pattern returns the text the schedule was parsed from.
func (s *Schedule) Pattern() string { return s.pattern }

// Pattern builds the pattern text of an RRULE value such as
// "FREQ=DAILY;BYHOUR=3;BYMINUTE=0".
func Pattern(rule string) string {
	return "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:" + rule + "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
