package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/csbs/csbs/internal/config"
	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/s3"
)

// openRepo opens the repository c.URL names (a directory or an S3 bucket)
// with password. With create, a missing repository is made; created says so.
func openRepo(ctx context.Context, c config.Repository, password []byte, create bool) (repo *repository.Repository, created bool, err error) {
	loc, err := c.Location()
	if err != nil {
		return nil, false, err
	}
	opts := repository.Options{LeaseTTL: c.LeaseTTL, GCMargin: c.GCMargin, Compression: repository.Compression(c.Compression)}
	if loc.Scheme == "file" {
		repo, err = repository.Open(loc.Path, password, opts)
		if create && (errors.Is(err, repository.ErrNotFound) || errors.Is(err, os.ErrNotExist)) {
			repo, err = repository.Init(loc.Path, password, opts)
			created = err == nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("repository %s: %w", loc.Path, err)
		}
		return repo, created, nil
	}
	be, err := s3.Open(ctx, s3Config(c, loc))
	if err != nil {
		return nil, false, fmt.Errorf("repository %s: %w", c.URL, err)
	}
	repo, err = repository.OpenBackend(ctx, be, password, opts)
	if create && errors.Is(err, repository.ErrNotFound) {
		repo, err = repository.InitBackend(ctx, be, password, opts)
		created = err == nil
	}
	if err != nil {
		be.Close()
		return nil, false, fmt.Errorf("repository %s: %w", c.URL, err)
	}
	return repo, created, nil
}

// repoExists reports whether the repository c.URL names has a config file.
func repoExists(ctx context.Context, c config.Repository) (bool, error) {
	loc, err := c.Location()
	if err != nil {
		return false, err
	}
	if loc.Scheme == "file" {
		_, err := os.Stat(filepath.Join(loc.Path, "config"))
		return err == nil, nil
	}
	be, err := s3.Open(ctx, s3Config(c, loc))
	if err != nil {
		return false, fmt.Errorf("repository %s: %w", c.URL, err)
	}
	defer be.Close()
	_, err = be.Stat(ctx, blob.Handle{Type: blob.ConfigFile})
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func s3Config(c config.Repository, loc config.Location) s3.Config {
	return s3.Config{
		Endpoint:  c.S3.Endpoint,
		Bucket:    loc.Bucket,
		Prefix:    loc.Prefix,
		Region:    c.S3.Region,
		AccessKey: c.S3.AccessKey,
		SecretKey: c.S3.SecretKey,
	}
}
