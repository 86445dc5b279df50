package schedule

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseRefusals(t *testing.T) {
	tests := []struct {
		name, pattern, want string // want: a fragment of the refusal, "" = accepted
	}{
		{"reference example", Pattern("FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27"), ""},
		{"daily", Pattern("FREQ=DAILY;BYHOUR=0;BYMINUTE=0"), ""},
		{"lower case and LF", "begin:vcalendar\nbegin:vevent\nrrule:freq=daily;byhour=3;byminute=5\nend:vevent\nend:vcalendar\n", ""},
		{"24 a day", Pattern("FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23;BYMINUTE=0"), ""},
		{"two a day far apart", Pattern("FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=2,14;BYMINUTE=30"), ""},
		{"daily with days", Pattern("FREQ=DAILY;BYDAY=SA,SU;BYHOUR=23;BYMINUTE=59"), ""},
		{"exactly one hour across midnight", Pattern("FREQ=DAILY;BYHOUR=0,23;BYMINUTE=30"), ""},

		{"25 a day", Pattern("FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23;BYMINUTE=0,59"), "at most 24"},
		{"two minutes in one hour", Pattern("FREQ=DAILY;BYHOUR=3;BYMINUTE=0,30"), "at least 1 hour"},
		{"59 minutes apart", Pattern("FREQ=DAILY;BYHOUR=3,4;BYMINUTE=10,9"), "at least 1 hour"},
		{"under an hour across midnight", Pattern("FREQ=DAILY;BYHOUR=0,23;BYMINUTE=20,50"), "at least 1 hour"},
		{"under an hour across midnight weekly", Pattern("FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=0,23;BYMINUTE=40,10"), "at least 1 hour"},
		{"across a week end", Pattern("FREQ=WEEKLY;BYDAY=SU,MO;BYHOUR=23,0;BYMINUTE=30"), ""},
		{"hourly", Pattern("FREQ=HOURLY;BYHOUR=1;BYMINUTE=0"), "FREQ=HOURLY is not supported"},
		{"monthly", Pattern("FREQ=MONTHLY;BYHOUR=1;BYMINUTE=0"), "not supported"},
		{"no freq", Pattern("BYHOUR=1;BYMINUTE=0"), "no FREQ"},
		{"interval", Pattern("FREQ=DAILY;INTERVAL=2;BYHOUR=1;BYMINUTE=0"), "INTERVAL is not supported"},
		{"count", Pattern("FREQ=DAILY;COUNT=2;BYHOUR=1;BYMINUTE=0"), "COUNT is not supported"},
		{"bad day", Pattern("FREQ=WEEKLY;BYDAY=XX;BYHOUR=1;BYMINUTE=0"), "BYDAY value"},
		{"numbered day", Pattern("FREQ=WEEKLY;BYDAY=1MO;BYHOUR=1;BYMINUTE=0"), "BYDAY value"},
		{"weekly without days", Pattern("FREQ=WEEKLY;BYHOUR=1;BYMINUTE=0"), "needs BYDAY"},
		{"hour 24", Pattern("FREQ=DAILY;BYHOUR=24;BYMINUTE=0"), "BYHOUR value"},
		{"minute 60", Pattern("FREQ=DAILY;BYHOUR=2;BYMINUTE=60"), "BYMINUTE value"},
		{"negative hour", Pattern("FREQ=DAILY;BYHOUR=-1;BYMINUTE=0"), "BYHOUR value"},
		{"no hour", Pattern("FREQ=DAILY;BYMINUTE=0"), "no BYHOUR"},
		{"no minute", Pattern("FREQ=DAILY;BYHOUR=1"), "no BYMINUTE"},
		{"duplicate part", Pattern("FREQ=DAILY;FREQ=DAILY;BYHOUR=1;BYMINUTE=0"), "more than once"},
		{"duplicate hour", Pattern("FREQ=DAILY;BYHOUR=1,1;BYMINUTE=0"), "twice"},
		{"no wrapper", "RRULE:FREQ=DAILY;BYHOUR=1;BYMINUTE=0", "BEGIN:VCALENDAR"},
		{"dtstart line", "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20200101T000000Z\r\nRRULE:FREQ=DAILY;BYHOUR=1;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "one RRULE line"},
		{"empty", "", "one RRULE line"},
		{"garbage part", Pattern("FREQ=DAILY;BYHOUR=1;BYMINUTE=0;X"), "NAME=VALUE"},
		{"too long", Pattern("FREQ=DAILY;BYHOUR=1;BYMINUTE=0") + strings.Repeat(" ", MaxPatternLen), "characters long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.pattern)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want a refusal containing %q", err, tt.want)
			}
			if !strings.Contains(e.Msg, tt.want) {
				t.Fatalf("refusal %q does not contain %q", e.Msg, tt.want)
			}
		})
	}
}

func at(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

// 2024-01-04 is a Thursday.
func TestNextPrev(t *testing.T) {
	tests := []struct {
		name, rule, now, next, prev string
	}{
		{"weekly later same day", "FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27", "2024-01-04 10:00", "2024-01-04 12:27", "2023-12-28 12:27"},
		{"weekly just passed", "FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27", "2024-01-04 12:28", "2024-01-11 12:27", "2024-01-04 12:27"},
		{"at the fire time", "FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27", "2024-01-04 12:27", "2024-01-11 12:27", "2024-01-04 12:27"},
		{"weekday list", "FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6;BYMINUTE=0", "2024-01-04 10:00", "2024-01-05 06:00", "2024-01-03 06:00"},
		{"weekday list over the weekend", "FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6;BYMINUTE=0", "2024-01-06 10:00", "2024-01-08 06:00", "2024-01-05 06:00"},
		{"several hours", "FREQ=DAILY;BYHOUR=1,9,17;BYMINUTE=5", "2024-01-04 09:06", "2024-01-04 17:05", "2024-01-04 09:05"},
		{"day boundary", "FREQ=DAILY;BYHOUR=23;BYMINUTE=30", "2024-01-04 23:31", "2024-01-05 23:30", "2024-01-04 23:30"},
		{"year boundary", "FREQ=DAILY;BYHOUR=0;BYMINUTE=15", "2023-12-31 23:00", "2024-01-01 00:15", "2023-12-31 00:15"},
		{"month boundary weekly", "FREQ=WEEKLY;BYDAY=SU;BYHOUR=4;BYMINUTE=0", "2024-01-29 00:00", "2024-02-04 04:00", "2024-01-28 04:00"},
		{"leap day", "FREQ=DAILY;BYHOUR=12;BYMINUTE=0", "2024-02-28 13:00", "2024-02-29 12:00", "2024-02-28 12:00"},
		{"daily with days", "FREQ=DAILY;BYDAY=SA;BYHOUR=8;BYMINUTE=0", "2024-01-04 00:00", "2024-01-06 08:00", "2023-12-30 08:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(Pattern(tt.rule))
			if err != nil {
				t.Fatal(err)
			}
			now := at(tt.now)
			if got := s.Next(now); !got.Equal(at(tt.next)) {
				t.Errorf("Next(%s) = %s, want %s", tt.now, got, tt.next)
			}
			if got := s.Prev(now); !got.Equal(at(tt.prev)) {
				t.Errorf("Prev(%s) = %s, want %s", tt.now, got, tt.prev)
			}
		})
	}
}

// TestNextInZone: the clock's zone does not matter; patterns are UTC.
func TestNextInZone(t *testing.T) {
	s, err := Parse(Pattern("FREQ=DAILY;BYHOUR=12;BYMINUTE=0"))
	if err != nil {
		t.Fatal(err)
	}
	now := at("2024-01-04 11:00").In(time.FixedZone("UTC+8", 8*3600))
	if got := s.Next(now); !got.Equal(at("2024-01-04 12:00")) {
		t.Fatalf("Next = %s", got)
	}
}

// TestNextWalk follows a schedule for weeks: every step is strictly
// later, at least an hour apart, and Prev(Next(t)) is Next(t).
func TestNextWalk(t *testing.T) {
	s, err := Parse(Pattern("FREQ=WEEKLY;BYDAY=MO,TU,SU;BYHOUR=0,11,23;BYMINUTE=0"))
	if err != nil {
		t.Fatal(err)
	}
	cur := at("2024-01-01 00:00")
	n := 0
	for cur.Before(at("2024-03-01 00:00")) {
		next := s.Next(cur)
		if next.Sub(cur) < MinInterval {
			t.Fatalf("Next(%s) = %s: under an hour", cur, next)
		}
		if p := s.Prev(next); !p.Equal(next) {
			t.Fatalf("Prev(%s) = %s", next, p)
		}
		cur = next
		n++
	}
	if want := 9 * 3 * 3; n < want-3 || n > want+3 { // ~9 weeks of 3 days × 3 times
		t.Fatalf("%d fire times in two months", n)
	}
}

// FuzzParse: Parse never panics, and what it accepts fires at least an
// hour apart around any time.
func FuzzParse(f *testing.F) {
	for _, r := range []string{"FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27", "FREQ=DAILY;BYHOUR=0,23;BYMINUTE=30", "FREQ=DAILY;BYHOUR=1;BYMINUTE=0,30", "X"} {
		f.Add(Pattern(r), int64(1700000000))
	}
	f.Fuzz(func(t *testing.T, pattern string, unix int64) {
		s, err := Parse(pattern)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("refusal is not an *Error: %v", err)
			}
			return
		}
		now := time.Unix(unix%(1<<34), 0).UTC()
		next, prev := s.Next(now), s.Prev(now)
		if !next.After(now) || prev.After(now) || next.Sub(prev) < MinInterval || next.Sub(now) > 8*24*time.Hour {
			t.Fatalf("%q at %s: prev %s next %s", pattern, now, prev, next)
		}
	})
}
