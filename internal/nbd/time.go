package nbd

import "time"

var (
	timeZero time.Time
	timePast = time.Unix(1, 0)
)
