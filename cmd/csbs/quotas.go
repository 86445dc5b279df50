package main

import (
	"github.com/csbs/csbs/internal/config"
	"github.com/csbs/csbs/internal/service"
)

// serviceQuotas resolves the configured quotas, per-project overrides
// merged with the general values, into the service's form.
func serviceQuotas(c config.Quotas) *service.Quotas {
	limits := func(id string) service.QuotaLimits {
		b, g, p := c.For(id)
		return service.QuotaLimits{Backups: b, BackupCapacityGB: g, Policies: p}
	}
	q := &service.Quotas{
		Default:  service.QuotaLimits{Backups: c.Backups, BackupCapacityGB: c.BackupCapacityGB, Policies: c.Policies},
		Projects: map[string]service.QuotaLimits{},
	}
	for id := range c.Projects {
		q.Projects[id] = limits(id)
	}
	return q
}
