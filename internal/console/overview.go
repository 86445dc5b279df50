package console

import (
	"fmt"
	"net/http"
	"time"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// overviewDays is how many days the overview's charts cover.
const overviewDays = 14

// day is one column of the overview's charts.
type day struct {
	Date                 string
	OK, Failed           int
	Stored               int64 // bytes added to the repository that day
	Total                int64 // bytes added up to and including that day
	OKH, FailH, TotalH   int   // bar heights in the SVG (of 100)
	X                    int
	Label                string
	TotalTitle, BarTitle string
}

type overview struct {
	Days       []day
	Backups    int
	Available  int
	AvgSaving  int // mean space_saving_ratio of available backups, %
	StoredMiB  int64
	LastGC     service.GCRun
	LastVerify service.VerifyRun
	MBps       int // of the last verification
	Damaged    int // the project's backups found damaged
	BarWidth   int
	ChartWidth int
}

// overviewPage charts the project's last 14 days from its backups: backups
// per day by outcome, data stored over time, and the deduplication ratio;
// when this process last collected garbage and verified backups, and how
// many of the project's backups were found damaged. Charts are inline SVG (no
// script, nothing from elsewhere).
func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request, s *session) {
	v := c.page("Overview", s)
	items, err := c.cfg.Service.Items(r.Context(), s.project, store.ItemFilter{Limit: 1000})
	if err != nil {
		v.Error = c.refusal(err)
	}
	now := time.Now().UTC()
	first := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -(overviewDays - 1))
	o := overview{Days: make([]day, overviewDays), LastGC: c.cfg.Service.LastGC(), LastVerify: c.cfg.Service.LastVerify(),
		BarWidth: 30, ChartWidth: overviewDays * 40}
	o.MBps = int(o.LastVerify.BytesPerSecond() / 1e6)
	for i := range o.Days {
		o.Days[i].Date = first.AddDate(0, 0, i).Format("2006-01-02")
		o.Days[i].Label = first.AddDate(0, 0, i).Format("02")
		o.Days[i].X = i*40 + 5
	}
	var before int64 // stored before the window
	var savings, avail int
	for _, it := range items {
		o.Backups++
		if v := it.Info.Verified; v != nil && v.Damaged {
			o.Damaged++
		}
		st := service.ClientStatus(it.Status)
		if st == store.StatusAvailable {
			avail++
			savings += it.Info.SpaceSavingRatio
		}
		d := int(it.CreatedAt.UTC().Sub(first).Hours() / 24)
		if it.CreatedAt.Before(first) {
			before += it.Info.StoredBytes
			continue
		}
		if d < 0 || d >= overviewDays {
			continue
		}
		switch st {
		case store.StatusAvailable:
			o.Days[d].OK++
		case store.StatusError:
			o.Days[d].Failed++
		}
		o.Days[d].Stored += it.Info.StoredBytes
	}
	o.Available = avail
	if avail > 0 {
		o.AvgSaving = savings / avail
	}
	maxCount, total := 1, before
	for i := range o.Days {
		total += o.Days[i].Stored
		o.Days[i].Total = total
		maxCount = max(maxCount, o.Days[i].OK+o.Days[i].Failed)
	}
	o.StoredMiB = total >> 20
	for i := range o.Days {
		dd := &o.Days[i]
		dd.OKH = dd.OK * 100 / maxCount
		dd.FailH = dd.Failed * 100 / maxCount
		if total > 0 {
			dd.TotalH = int(dd.Total * 100 / total)
		}
		dd.BarTitle = fmt.Sprintf("%s: %d available, %d failed", dd.Date, dd.OK, dd.Failed)
		dd.TotalTitle = fmt.Sprintf("%s: %d MiB stored in all", dd.Date, dd.Total>>20)
	}
	v.Data = o
	c.render(w, "overview", http.StatusOK, v)
}
