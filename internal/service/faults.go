package service

import (
	"errors"
	"strings"
	"syscall"
)

// failReason is the reason a failed job records: the error, preceded by
// what a person should know first when the cause is a common fault.
func failReason(op string, err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ENOSPC) || strings.Contains(msg, "no space left on device"):
		return "the repository is full (no space left on its storage): delete backups no longer needed and let garbage collection free their space, or give the repository more room; " + op + " failed: " + msg
	case errors.Is(err, syscall.EDQUOT) || strings.Contains(msg, "disk quota exceeded"):
		return "the repository's storage quota is exhausted: delete backups no longer needed, or raise the quota; " + op + " failed: " + msg
	}
	return msg
}
