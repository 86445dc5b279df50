package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/schedule"
)

// Verify says when the service verifies backups: it re-reads and
// authenticates everything a backup references, quarantines damaged data
// (so the next backup stores it again) and records per backup when it was
// verified and whether it is damaged.
type Verify struct {
	// Schedule is when verification runs: an interval ("6h", at least 1s;
	// run at its multiples of the day, see VerifySchedule.Next),
	// an iCalendar recurrence in UTC as policies use
	// ("FREQ=DAILY;BYHOUR=3;BYMINUTE=0"; FREQ DAILY or WEEKLY with BYHOUR
	// and BYMINUTE, BYDAY for WEEKLY), or "off". Default daily at 03:00 UTC.
	Schedule string `yaml:"schedule"`
	// MaxAge is how long a verification holds: each run verifies the
	// backups not verified within MaxAge (never verified first). Default
	// 168h (every backup is read about once a week). At least 1s.
	MaxAge time.Duration `yaml:"max_age"`
}

// VerifySchedule is a parsed verify.schedule: an interval, a recurrence,
// or neither (off).
type VerifySchedule struct {
	Every time.Duration      // > 0: an interval
	Rule  *schedule.Schedule // non-nil: a recurrence
}

// Off reports whether scheduled verification is disabled.
func (s VerifySchedule) Off() bool { return s.Every <= 0 && s.Rule == nil }

// Next returns the first run after t (the zero time when off). An
// interval's runs fall on its multiples (time.Truncate: a "6h" runs at
// 00:00, 06:00, … UTC), so that every process of a cluster computes the
// same fire times and each runs once (service.RunVerifier).
func (s VerifySchedule) Next(t time.Time) time.Time {
	switch {
	case s.Every > 0:
		return t.Truncate(s.Every).Add(s.Every)
	case s.Rule != nil:
		return s.Rule.Next(t)
	}
	return time.Time{}
}

// ParseSchedule parses verify.schedule; errors name the key.
func (v Verify) ParseSchedule() (VerifySchedule, error) {
	s := strings.TrimSpace(v.Schedule)
	switch {
	case s == "" || strings.EqualFold(s, "off"):
		return VerifySchedule{}, nil
	case strings.Contains(strings.ToUpper(s), "FREQ="):
		rule, err := schedule.Parse(schedule.Pattern(s))
		if err != nil {
			return VerifySchedule{}, fmt.Errorf("verify.schedule %q: %v", s, err)
		}
		return VerifySchedule{Rule: rule}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return VerifySchedule{}, fmt.Errorf("verify.schedule %q: want an interval of at least 1s (\"6h\"), an RRULE (\"FREQ=DAILY;BYHOUR=3;BYMINUTE=0\") or off", s)
	}
	return VerifySchedule{Every: d}, nil
}

func (v Verify) validate() error {
	if _, err := v.ParseSchedule(); err != nil {
		return err
	}
	if v.MaxAge < time.Second {
		return fmt.Errorf("verify.max_age %s: want at least 1s", v.MaxAge)
	}
	return nil
}
