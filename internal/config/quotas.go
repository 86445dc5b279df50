package config

import "fmt"

// Quotas limit what each project may keep; -1 sets no limit.
type Quotas struct {
	// Backups is how many backups (of any status but deleted) a project
	// may keep. Default 600.
	Backups int `yaml:"backups"`
	// BackupCapacityGB bounds the sum of the sizes of a project's backups,
	// in GB. Default -1 (unlimited).
	BackupCapacityGB int `yaml:"backup_capacity_gb"`
	// Policies is how many backup policies a project may have (CSBS.0001
	// beyond). Default 32, the user guide's limit.
	Policies int `yaml:"policies"`
	// Projects overrides the quotas above for the projects it names by id
	// (YAML only); a key an entry leaves out keeps the value above.
	Projects map[string]ProjectQuotas `yaml:"projects"`
}

// ProjectQuotas are the quotas of one project; nil keeps the general value.
type ProjectQuotas struct {
	Backups          *int `yaml:"backups"`
	BackupCapacityGB *int `yaml:"backup_capacity_gb"`
	Policies         *int `yaml:"policies"`
}

// For returns the backups, capacity and policies quotas of a project.
func (q Quotas) For(projectID string) (backups, capacityGB, policies int) {
	backups, capacityGB, policies = q.Backups, q.BackupCapacityGB, q.Policies
	p, ok := q.Projects[projectID]
	if !ok {
		return
	}
	if p.Backups != nil {
		backups = *p.Backups
	}
	if p.BackupCapacityGB != nil {
		capacityGB = *p.BackupCapacityGB
	}
	if p.Policies != nil {
		policies = *p.Policies
	}
	return
}

func (q Quotas) validate() error {
	check := func(key string, v *int) error {
		if v != nil && *v < -1 {
			return fmt.Errorf("%s %d: want -1 (unlimited) or a limit of 0 or more", key, *v)
		}
		return nil
	}
	for _, c := range []struct {
		key string
		v   *int
	}{{"quotas.backups", &q.Backups}, {"quotas.backup_capacity_gb", &q.BackupCapacityGB}, {"quotas.policies", &q.Policies}} {
		if err := check(c.key, c.v); err != nil {
			return err
		}
	}
	for id, p := range q.Projects {
		for _, c := range []struct {
			key string
			v   *int
		}{{"backups", p.Backups}, {"backup_capacity_gb", p.BackupCapacityGB}, {"policies", p.Policies}} {
			if err := check("quotas.projects."+id+"."+c.key, c.v); err != nil {
				return err
			}
		}
	}
	return nil
}
