package service

import (
	"context"

	"github.com/csbs/csbs/internal/compute"
)

// Servers lists the servers of a project (the console's server page).
func (s *Service) Servers(ctx context.Context, projectID string) ([]compute.Server, error) {
	return s.compute.Servers(ctx, projectID)
}
