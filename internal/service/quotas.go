package service

import (
	"context"
	"fmt"
	"strings"

	"github.com/csbs/csbs/internal/store"
)

// Unlimited is the quota value without a limit.
const Unlimited = -1

// QuotaLimits are the quotas of one project. Unlimited (-1) sets no limit.
type QuotaLimits struct {
	Backups          int // backups kept (every status but deleted)
	BackupCapacityGB int // sum of the backups' sizes, in GB
	Policies         int // backup policies
}

// DefaultQuotaLimits are the quotas of the reference: 600 backups and
// unlimited capacity, and the user guide's 32 policies.
func DefaultQuotaLimits() QuotaLimits {
	return QuotaLimits{Backups: 600, BackupCapacityGB: Unlimited, Policies: DefaultMaxPolicies}
}

// Quotas are the limits of every project: Default, unless Projects has an
// entry for the project (complete: every field counts).
type Quotas struct {
	Default  QuotaLimits
	Projects map[string]QuotaLimits
}

// orDefault is q, or the default quotas when q is nil.
func (q *Quotas) orDefault() Quotas {
	if q == nil {
		return Quotas{Default: DefaultQuotaLimits()}
	}
	return *q
}

// For returns the limits of a project.
func (q Quotas) For(projectID string) QuotaLimits {
	if l, ok := q.Projects[projectID]; ok {
		return l
	}
	return q.Default
}

// QuotaUsage is one line of the quota report.
type QuotaUsage struct {
	Type  string // backups | backup_capacity
	Unit  string // "" for backups, GB for backup_capacity
	Quota int
	Used  int64
}

// gigabytes rounds a byte count up to whole GB, so that any use shows.
func gigabytes(n int64) int64 { return (n + 1<<30 - 1) >> 30 }

// usage is what a project keeps, as quotas count it.
type usage struct {
	backups int
	bytes   int64
}

// projectUsage counts the non-deleted backups of a project and the data
// they keep: per server, the used data of its oldest backup that holds
// any (the base every later one builds on, full or not), plus the changed
// data of each later one. Deleting a full backup thus moves its data onto
// the next backup instead of making it vanish from the count, as the
// backups that remain still hold it.
func projectUsage(ctx context.Context, tx store.Tx, projectID string) (usage, error) {
	sizes, err := tx.ItemSizes(ctx, projectID)
	if err != nil {
		return usage{}, err
	}
	u := usage{backups: len(sizes)}
	based := ""
	for _, is := range sizes {
		switch {
		case is.UsedBytes == 0: // not finished, failed, or empty disks
		case based != is.ResourceID:
			based = is.ResourceID
			u.bytes += is.UsedBytes
		default:
			u.bytes += is.SizeBytes
		}
	}
	return u, nil
}

// Quotas reports the quotas of a project and what it uses of them: the
// number of its backups that are not deleted, and the data they keep (see
// projectUsage) rounded up to GB.
func (s *Service) Quotas(ctx context.Context, projectID string) ([]QuotaUsage, error) {
	u, err := projectUsage(ctx, s.store, projectID)
	if err != nil {
		return nil, err
	}
	l := s.quotas.For(projectID)
	return []QuotaUsage{
		{Type: "backup_capacity", Unit: "GB", Quota: l.BackupCapacityGB, Used: gigabytes(u.bytes)},
		{Type: "backups", Quota: l.Backups, Used: int64(u.backups)},
	}, nil
}

// CheckQuota refuses with CSBS.9006 (400) when the project cannot take
// newBackups more backups: their number would pass the backups quota, or
// the project's backups already fill its capacity (the size of a backup is
// known only once it ran, so capacity is checked before, not predicted).
// Call it before creating backups, and create nothing when it refuses.
func (s *Service) CheckQuota(ctx context.Context, projectID string, newBackups int) error {
	return s.checkQuota(ctx, s.store, projectID, newBackups)
}

// checkQuota is CheckQuota inside a transaction: on SQLite transactions
// run one at a time, so a check and the inserts after it cannot be raced.
func (s *Service) checkQuota(ctx context.Context, tx store.Tx, projectID string, newBackups int) error {
	l := s.quotas.For(projectID)
	if l.Backups == Unlimited && l.BackupCapacityGB == Unlimited {
		return nil
	}
	u, err := projectUsage(ctx, tx, projectID)
	if err != nil {
		return err
	}
	var over []string
	if l.Backups != Unlimited && u.backups+newBackups > l.Backups {
		over = append(over, fmt.Sprintf("backups (%d kept, %d more requested, quota %d)", u.backups, newBackups, l.Backups))
	}
	if l.BackupCapacityGB != Unlimited && u.bytes >= int64(l.BackupCapacityGB)<<30 {
		over = append(over, fmt.Sprintf("backup_capacity (%d GB used, quota %d GB)", gigabytes(u.bytes), l.BackupCapacityGB))
	}
	if over != nil {
		return errf(CodeQuotaExceeded, "Quota exceeded for resources: %s; delete backups that are no longer needed or ask the administrator to raise the quota", strings.Join(over, ", "))
	}
	return nil
}

// CheckPolicyQuota refuses with CSBS.0001 (400, "the number of backup
// policies has reached the upper limit") when the project, which has
// policies policies now, cannot have newPolicies more.
func (s *Service) CheckPolicyQuota(projectID string, policies, newPolicies int) error {
	l := s.quotas.For(projectID)
	if l.Policies != Unlimited && policies+newPolicies > l.Policies {
		return errf(CodePolicyLimit, "Service over limit: the project has %d backup policies and may have at most %d; delete a policy or ask the administrator to raise the quota", policies, l.Policies)
	}
	return nil
}
