package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"github.com/csbs/csbs/internal/auth"
	"github.com/csbs/csbs/internal/config"
	"github.com/csbs/csbs/internal/store"
)

// identity is the identity of cfg.Auth: none (a nil validator), builtin
// (users of the config, tokens signed with the key in token_key_file,
// revocations in db) or keystone. key is the token signing key (builtin
// only), from which the console derives its CSRF key.
func identity(cfg config.Auth, db store.Store, log *slog.Logger) (v auth.Validator, key []byte, err error) {
	switch cfg.Mode {
	case "builtin":
		key, err := auth.LoadOrCreateKey(cfg.TokenKeyFile)
		if err != nil {
			return nil, nil, err
		}
		var users []auth.User
		for _, u := range cfg.Users {
			au := auth.User{ID: u.ID, Name: u.Name, Domain: u.Domain, PasswordHash: u.PasswordHash, Password: u.Password}
			for _, p := range u.Projects {
				au.Projects = append(au.Projects, auth.Project{ID: p.ID, Name: p.Name, Roles: p.Roles})
			}
			if u.Password != "" {
				log.Warn("a user's password is in clear text in the config; use password_hash (csbs hash-password) outside development", "user", u.Name)
			}
			users = append(users, au)
		}
		b, err := auth.NewBuiltin(auth.BuiltinConfig{Users: users, Key: key, TTL: cfg.TokenTTL, Revocations: db})
		if err != nil {
			return nil, nil, err
		}
		log.Info("auth.mode builtin", "users", len(users), "token_ttl", cfg.TokenTTL.String(), "token_key_file", cfg.TokenKeyFile)
		return b, key, nil
	case "keystone":
		k, err := auth.NewKeystone(auth.KeystoneConfig{
			URL: cfg.KeystoneURL, User: cfg.KeystoneUser, Password: cfg.KeystonePassword, UserDomain: cfg.KeystoneUserDomain,
			Project: cfg.KeystoneProject, ProjectDomain: cfg.KeystoneProjectDomain, CacheTTL: cfg.KeystoneCacheTTL,
		})
		if err != nil {
			return nil, nil, err
		}
		log.Info("auth.mode keystone", "keystone_url", cfg.KeystoneURL, "cache_ttl", cfg.KeystoneCacheTTL.String())
		return k, nil, nil
	}
	return nil, nil, nil
}

// listenTLS wraps ln in TLS when the config names a certificate. Without
// one, passwords and tokens would cross the network in clear unless the
// address is loopback (or a TLS proxy is in front): that is warned about.
func listenTLS(ln net.Listener, cfg config.Config, log *slog.Logger) (net.Listener, string, error) {
	if cfg.TLSCert == "" {
		if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() && cfg.Auth.Mode != "none" {
			log.Warn("serving HTTP on a non-loopback address: passwords and tokens cross the network in clear; set tls_cert and tls_key, or put a TLS proxy in front", "listen", ln.Addr().String())
		}
		return ln, "http", nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, "", fmt.Errorf("tls_cert/tls_key: %w", err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), "https", nil
}
