package service

import (
	"errors"
	"fmt"

	"github.com/csbs/csbs/internal/store"
)

// Error is a refusal the API reports as {"error_code", "error_msg"} with
// the HTTP status the reference gives for the code
// (api-reference/appendixes/error_codes.txt).
type Error struct {
	Code   string
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

// The codes this service uses, with their documented HTTP status.
const (
	CodePolicyLimit        = "CSBS.0001" // 400
	CodeInvalidParam       = "CSBS.9001" // 400: "Parameter verification failed"
	CodeServerNotFound     = "CSBS.6000" // 400
	CodeTypeNotProtectable = "CSBS.6003" // 400
	CodeServerInService    = "CSBS.6005" // 400: used for "a backup of this server is already running"
	CodeStatusNotAllowed   = "CSBS.6006" // 400
	CodeNoVolume           = "CSBS.6007" // 400
	CodeShareableVolume    = "CSBS.6010" // 400
	CodeItemExecuting      = "CSBS.2003" // 400
	CodeItemNotFound       = "CSBS.3001" // 404
	CodeTagLimit           = "CSBS.7000" // 400
	CodeQuotaExceeded      = "CSBS.9006" // 400
	CodeInternal           = "CSBS.9999" // 500

	// Policies (issue 4).
	CodePlanNotFound   = "CSBS.3000" // 404: "plan not found"
	CodeServerInPolicy = "CSBS.6004" // 400: the server is bound to another policy
	// The reference gives these three 500, but each answers a request that
	// cannot be done in the policy's present state, not a fault of the
	// service: clients retry a 5xx as a server fault, so they get 400.
	CodePlanNoResource    = "CSBS.6032" // 400 (500 in the reference): "plan has no resource backup"
	CodeManualExecuting   = "CSBS.1001" // 400 (500 in the reference): a manual execution of the policy is running
	CodeAutoPlanExecuting = "CSBS.6030" // 400 (500 in the reference): an automatic execution of the policy is running
)

var codeStatus = map[string]int{
	CodePolicyLimit:        400,
	CodeInvalidParam:       400,
	CodeServerNotFound:     400,
	CodeTypeNotProtectable: 400,
	CodeServerInService:    400,
	CodeStatusNotAllowed:   400,
	CodeNoVolume:           400,
	CodeShareableVolume:    400,
	CodeItemExecuting:      400,
	CodeItemNotFound:       404,
	CodeTagLimit:           400,
	CodeQuotaExceeded:      400,
	CodeInternal:           500,

	CodePlanNotFound:      404,
	CodeServerInPolicy:    400,
	CodePlanNoResource:    400,
	CodeManualExecuting:   400,
	CodeAutoPlanExecuting: 400,
}

// errf builds an Error with the status of its code.
func errf(code, format string, args ...any) *Error {
	st, ok := codeStatus[code]
	if !ok {
		st = 400
	}
	return &Error{Code: code, Status: st, Msg: fmt.Sprintf(format, args...)}
}

// InvalidParam is the refusal of a request field: the message names it.
func InvalidParam(field, format string, args ...any) *Error {
	return errf(CodeInvalidParam, "invalid %s: %s", field, fmt.Sprintf(format, args...))
}

// AsError returns the *Error inside err, if any. A database whose disk is
// full is one too (503): the request wrote nothing and can be repeated
// once space is freed.
func AsError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	if errors.Is(err, store.ErrFull) {
		return &Error{Code: CodeInternal, Status: 503, Msg: "the database's disk is full: nothing was written; free space where the database keeps its files (data_dir for SQLite, the PostgreSQL server otherwise) and try again"}, true
	}
	return nil, false
}
