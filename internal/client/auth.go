package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// AuthOptions are Keystone v3 password credentials, as OpenStack clients
// take them (OS_AUTH_URL, OS_USERNAME, …).
type AuthOptions struct {
	// AuthURL is the identity endpoint, with or without the trailing /v3.
	AuthURL  string
	Username string
	// Password is a secret: it is sent to AuthURL only.
	Password string
	// UserDomainName is the user's domain; default "Default".
	UserDomainName string
	// ProjectID or ProjectName (in ProjectDomainName, default the user's)
	// is the project the token is scoped to.
	ProjectID, ProjectName, ProjectDomainName string
	// Region picks the endpoint in the catalog; empty takes the first.
	Region string
	// Interface of the endpoint; default "public".
	Interface string
	// HTTP is the HTTP client; default one with a 60 s timeout.
	HTTP *http.Client
}

// Authenticate gets a token with o and returns a client of the
// data-protect endpoint that the token's catalog names.
func Authenticate(ctx context.Context, o AuthOptions) (*Client, error) {
	if o.AuthURL == "" || o.Username == "" || o.Password == "" {
		return nil, errors.New("authentication needs an auth URL, a user name and a password (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD)")
	}
	if o.ProjectID == "" && o.ProjectName == "" {
		return nil, errors.New("authentication needs a project (OS_PROJECT_ID or OS_PROJECT_NAME)")
	}
	if o.UserDomainName == "" {
		o.UserDomainName = "Default"
	}
	if o.ProjectDomainName == "" {
		o.ProjectDomainName = o.UserDomainName
	}
	if o.Interface == "" {
		o.Interface = "public"
	}
	project := map[string]any{}
	if o.ProjectID != "" {
		project["id"] = o.ProjectID
	} else {
		project["name"] = o.ProjectName
		project["domain"] = map[string]string{"name": o.ProjectDomainName}
	}
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{
			"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{
				"name": o.Username, "password": o.Password,
				"domain": map[string]string{"name": o.UserDomainName},
			}},
		},
		"scope": map[string]any{"project": project},
	}}
	var doc struct {
		Token struct {
			Project struct {
				ID string `json:"id"`
			} `json:"project"`
			Catalog []struct {
				Type      string `json:"type"`
				Endpoints []struct {
					Interface string `json:"interface"`
					Region    string `json:"region"`
					RegionID  string `json:"region_id"`
					URL       string `json:"url"`
				} `json:"endpoints"`
			} `json:"catalog"`
		} `json:"token"`
	}
	ac := &Client{HTTP: o.HTTP}
	var hdr http.Header
	u := strings.TrimSuffix(o.AuthURL, "/")
	if !strings.HasSuffix(u, "/v3") {
		u += "/v3"
	}
	if err := ac.do(ctx, http.MethodPost, u+"/auth/tokens", body, &doc, &hdr); err != nil {
		return nil, fmt.Errorf("authenticate at %s: %w", u, err)
	}
	token := hdr.Get("X-Subject-Token")
	if token == "" {
		return nil, fmt.Errorf("authenticate at %s: the answer has no X-Subject-Token header", u)
	}
	for _, svc := range doc.Token.Catalog {
		if svc.Type != "data-protect" {
			continue
		}
		for _, ep := range svc.Endpoints {
			if ep.Interface != o.Interface || (o.Region != "" && ep.Region != o.Region && ep.RegionID != o.Region) {
				continue
			}
			c := New(ep.URL, token)
			c.HTTP = o.HTTP
			return c, nil
		}
	}
	return nil, fmt.Errorf("the catalog of project %s has no %s data-protect endpoint%s; set CSBS_ENDPOINT instead",
		doc.Token.Project.ID, o.Interface, inRegion(o.Region))
}

func inRegion(r string) string {
	if r == "" {
		return ""
	}
	return " in region " + r
}
