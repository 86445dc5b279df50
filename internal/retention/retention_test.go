package retention

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// history generates n backups, the first at start, one every step; ids
// b000, b001, … in time order.
func history(start time.Time, step time.Duration, n int) []Backup {
	bs := make([]Backup, n)
	for i := range bs {
		bs[i] = Backup{ID: fmt.Sprintf("b%03d", i), CreatedAt: start.Add(time.Duration(i) * step)}
	}
	return bs
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func ids(bs []Backup) string {
	var s []string
	for _, b := range bs {
		s = append(s, b.ID)
	}
	return strings.Join(s, ",")
}

func zone(s string) *time.Location {
	z, err := ParseZone(s)
	if err != nil {
		panic(err)
	}
	return z
}

func TestKeep(t *testing.T) {
	jan1 := at("2024-01-01T00:00:00Z") // a Monday
	hourly10 := history(jan1, time.Hour, 10)
	daily10 := history(jan1, 24*time.Hour, 10)
	after10d := jan1.Add(9*24*time.Hour + time.Minute)
	tzDays := []Backup{
		{"a", at("2024-01-01T15:00:00Z")}, // 23:00 on Jan 1 at UTC+08:00
		{"b", at("2024-01-01T17:00:00Z")}, // 01:00 on Jan 2 at UTC+08:00
		{"c", at("2024-01-02T15:00:00Z")}, // 23:00 on Jan 2 at UTC+08:00
	}
	tests := []struct {
		name    string
		rule    Rule
		backups []Backup
		now     time.Time
		keep    string // ids newest first
		drops   int
	}{
		{"nothing set keeps all", Rule{}, hourly10, after10d, "b009,b008,b007,b006,b005,b004,b003,b002,b001,b000", 0},
		{"permanent wins over max", Rule{Permanent: true, MaxBackups: 1}, hourly10, after10d, "b009,b008,b007,b006,b005,b004,b003,b002,b001,b000", 0},
		{"only long-term rules keep all", Rule{Day: 1, Zone: time.UTC}, hourly10, after10d, "b009,b008,b007,b006,b005,b004,b003,b002,b001,b000", 0},
		{"max 3", Rule{MaxBackups: 3}, hourly10, after10d, "b009,b008,b007", 7},
		{"max larger than history", Rule{MaxBackups: 50}, hourly10, after10d, "b009,b008,b007,b006,b005,b004,b003,b002,b001,b000", 0},
		{"max -1 and days -1 keep all", Rule{MaxBackups: -1, RetentionDays: -1}, hourly10, after10d, "b009,b008,b007,b006,b005,b004,b003,b002,b001,b000", 0},
		{"2 days of daily backups", Rule{RetentionDays: 2}, daily10, after10d, "b009,b008", 8},
		{"max and days both apply", Rule{MaxBackups: 1, RetentionDays: 30}, daily10, after10d, "b009", 9},
		{"days stricter than max", Rule{MaxBackups: 5, RetentionDays: 3}, daily10, after10d, "b009,b008,b007", 7},
		{"expired all", Rule{RetentionDays: 1}, daily10, jan1.AddDate(0, 1, 0), "", 10},
		{"daily rule keeps each day's newest", Rule{MaxBackups: 1, Day: 3, Zone: time.UTC},
			history(jan1, 6*time.Hour, 20), // 4 a day for 5 days
			jan1.AddDate(0, 0, 5), "b019,b015,b011", 17},
		{"day in UTC", Rule{MaxBackups: 1, Day: 2, Zone: time.UTC}, tzDays, at("2024-01-03T00:00:00Z"), "c,b", 1},
		{"day in UTC+08:00", Rule{MaxBackups: 1, Day: 2, Zone: zone("UTC+08:00")}, tzDays, at("2024-01-03T00:00:00Z"), "c,a", 1},
		{"day in UTC-10:00", Rule{MaxBackups: 1, Day: 3, Zone: zone("UTC-10:00")}, tzDays, at("2024-01-03T00:00:00Z"), "c,b", 1},
		{"weekly rule (ISO weeks from Monday)", Rule{MaxBackups: 2, Week: 3, Zone: time.UTC},
			history(jan1, 24*time.Hour, 28), // Mon Jan 1 … Sun Jan 28
			jan1.AddDate(0, 1, 0), "b027,b026,b020,b013", 24},
		{"monthly rule", Rule{MaxBackups: 1, Month: 2, Zone: time.UTC},
			history(jan1, 24*time.Hour, 91), // Jan 1 … Mar 31
			jan1.AddDate(0, 4, 0), "b090,b059", 89},
		{"yearly rule", Rule{MaxBackups: 1, Year: 5, Zone: time.UTC},
			history(at("2021-06-01T00:00:00Z"), 30*24*time.Hour, 40), // Jun 2021 … 2024
			at("2025-01-01T00:00:00Z"), "b039,b031,b019,b007", 36},
		{"union of long-term rules", Rule{MaxBackups: 1, Day: 2, Week: 2, Month: 2, Zone: time.UTC},
			history(jan1, 24*time.Hour, 40), // Jan 1 … Feb 9
			jan1.AddDate(0, 2, 0), "b039,b038,b034,b030", 36},
		{"long-term rules beat the age limit", Rule{RetentionDays: 1, Month: 1, Zone: time.UTC},
			daily10, jan1.AddDate(0, 1, 0), "b009", 9},
		{"ties broken by id", Rule{MaxBackups: 1}, []Backup{{"x", jan1}, {"y", jan1}}, after10d, "y", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keep, drop := Keep(tt.rule, tt.backups, tt.now)
			if got := ids(keep); got != tt.keep {
				t.Errorf("keep %s, want %s", got, tt.keep)
			}
			if len(drop) != tt.drops {
				t.Errorf("drop %d (%s), want %d", len(drop), ids(drop), tt.drops)
			}
			all := append(append([]Backup(nil), keep...), drop...)
			if len(all) != len(tt.backups) {
				t.Fatalf("keep+drop = %d backups of %d", len(all), len(tt.backups))
			}
			for _, b := range tt.backups {
				if !slices.ContainsFunc(all, func(x Backup) bool { return x.ID == b.ID }) {
					t.Fatalf("backup %s neither kept nor dropped", b.ID)
				}
			}
		})
	}
}

func TestParseZone(t *testing.T) {
	tests := []struct {
		in     string
		offset int // seconds; -1 = refused
	}{
		{"UTC+08:00", 8 * 3600},
		{"UTC-03:30", -(3*3600 + 1800)},
		{"UTC+00:00", 0},
		{"UTC", 0},
		{"UTC+14:00", 14 * 3600},
		{"UTC+14:30", -1},
		{"UTC+8", -1},
		{"GMT+08:00", -1},
		{"UTC+08:60", -1},
		{"Asia/Shanghai", -1},
		{"", -1},
	}
	for _, tt := range tests {
		z, err := ParseZone(tt.in)
		if tt.offset == -1 {
			if err == nil {
				t.Errorf("%q accepted", tt.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if _, off := time.Date(2024, 1, 1, 0, 0, 0, 0, z).Zone(); off != tt.offset {
			t.Errorf("%q: offset %d, want %d", tt.in, off, tt.offset)
		}
	}
}
