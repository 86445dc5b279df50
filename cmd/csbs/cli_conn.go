package main

// The CLI: subcommands that talk HTTP to a csbs service (backup, restore,
// policy, tag, quota, job, kept-clones). This file has what they share: connection
// settings, output as tables or JSON.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/client"
)

// cliCommands are the client subcommands, one per noun.
func cliCommands() []*cobra.Command {
	return []*cobra.Command{backupCmd(), restoreCmd(), policyCmd(), tagCmd(), quotaCmd(), jobCmd(), keptClonesCmd()}
}

// conn holds the connection settings of a client command. Each flag
// defaults to its environment variable.
type conn struct {
	authURL, username, password, userDomain string
	projectID, projectName, region          string
	endpoint, csbsProject, token            string
	output                                  string
	timeout                                 time.Duration
}

// connSettings lists the flags: name, environment variable, help.
var connSettings = []struct{ flag, env, help string }{
	{"os-auth-url", "OS_AUTH_URL", "Keystone v3 URL to authenticate at (then the data-protect endpoint of the catalog is used)"},
	{"os-username", "OS_USERNAME", "user name"},
	{"os-password", "OS_PASSWORD", "password (prefer the environment variable: flags show in ps)"},
	{"os-user-domain-name", "OS_USER_DOMAIN_NAME", "the user's domain (default Default)"},
	{"os-project-id", "OS_PROJECT_ID", "project to work in"},
	{"os-project-name", "OS_PROJECT_NAME", "project to work in, by name"},
	{"os-region-name", "OS_REGION_NAME", "region of the endpoint in the catalog"},
	{"endpoint", "CSBS_ENDPOINT", "csbs URL (http://host:8799, or …/v1/{project_id}); skips Keystone"},
	{"project-id", "CSBS_PROJECT_ID", "project of --endpoint (when it does not end in /v1/{project_id})"},
	{"token", "CSBS_TOKEN", "token for --endpoint (none with auth.mode none)"},
}

// addConnFlags registers the connection and output flags on a noun.
func addConnFlags(cmd *cobra.Command) *conn {
	c := &conn{}
	ptrs := []*string{&c.authURL, &c.username, &c.password, &c.userDomain, &c.projectID, &c.projectName,
		&c.region, &c.endpoint, &c.csbsProject, &c.token}
	fs := cmd.PersistentFlags()
	for i, s := range connSettings {
		fs.StringVar(ptrs[i], s.flag, "", s.help+" [$"+s.env+"]")
	}
	fs.StringVarP(&c.output, "output", "o", "table", "output: table (for people) or json (the API objects, for scripts)")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "timeout of each HTTP request")
	return c
}

// env fills the settings not given as flags from the environment.
func (c *conn) env() {
	ptrs := []*string{&c.authURL, &c.username, &c.password, &c.userDomain, &c.projectID, &c.projectName,
		&c.region, &c.endpoint, &c.csbsProject, &c.token}
	for i, s := range connSettings {
		if *ptrs[i] == "" {
			*ptrs[i] = os.Getenv(s.env)
		}
	}
}

// client connects: directly to --endpoint, or through Keystone.
func (c *conn) client(ctx context.Context) (*client.Client, error) {
	c.env()
	if c.output != "table" && c.output != "json" {
		return nil, fmt.Errorf("--output %q: want table or json", c.output)
	}
	if c.endpoint != "" {
		ep := strings.TrimSuffix(c.endpoint, "/")
		if !strings.Contains(ep, "/v1/") {
			project := c.csbsProject
			if project == "" {
				project = c.projectID // OS_PROJECT_ID
			}
			if project == "" {
				return nil, errors.New("--endpoint needs a project: set CSBS_PROJECT_ID (or --project-id), or give the endpoint as …/v1/{project_id}")
			}
			ep += "/v1/" + url.PathEscape(project)
		}
		cl := client.New(ep, c.token)
		cl.UserAgent = "csbs-cli"
		cl.HTTP = httpClient(c.timeout)
		return cl, nil
	}
	if c.authURL == "" {
		return nil, errors.New("no service to talk to: set CSBS_ENDPOINT and CSBS_PROJECT_ID (and CSBS_TOKEN when the service checks tokens), or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and OS_PROJECT_ID or OS_PROJECT_NAME")
	}
	cl, err := client.Authenticate(ctx, client.AuthOptions{
		AuthURL: c.authURL, Username: c.username, Password: c.password, UserDomainName: c.userDomain,
		ProjectID: c.projectID, ProjectName: c.projectName, Region: c.region, HTTP: httpClient(c.timeout),
	})
	if err != nil {
		return nil, err
	}
	cl.UserAgent = "csbs-cli"
	return cl, nil
}

// printJSON writes v (raw API objects as they came) indented.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// table writes aligned rows under a header.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// keyValues writes one object as aligned "key  value" lines.
func keyValues(w io.Writer, kv [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	return tw.Flush()
}

// show prints raw (one API object) as JSON, or as key-value lines of its
// top-level scalar fields when output is a table.
func show(w io.Writer, output string, raw json.RawMessage) error {
	if output == "json" {
		return printJSON(w, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	var kv [][2]string
	for _, k := range sortedKeys(m) {
		kv = append(kv, [2]string{k, scalar(m[k])})
	}
	return keyValues(w, kv)
}

// scalar renders a JSON value for a table cell; objects and lists compactly.
func scalar(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64) // byte counts whole, not 6.7108864e+07
	case bool:
		return fmt.Sprint(x)
	}
	b, _ := json.Marshal(v)
	s := string(b)
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return s
}

// field digs a value out of decoded JSON by a dotted path.
func field(m map[string]any, path string) string {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = o[k]
	}
	return scalar(v)
}

// listTable prints a list of raw objects: as a JSON array, or a table of
// the given columns (dotted paths into each object).
func listTable(w io.Writer, output string, raws []json.RawMessage, header, paths []string) error {
	if output == "json" {
		if raws == nil {
			raws = []json.RawMessage{}
		}
		return printJSON(w, raws)
	}
	rows := make([][]string, 0, len(raws))
	for _, raw := range raws {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		row := make([]string, len(paths))
		for i, p := range paths {
			row[i] = field(m, p)
		}
		rows = append(rows, row)
	}
	return table(w, header, rows)
}

// listQuery turns --limit/--marker and key=value filters into a query.
func listQuery(limit int, marker string, filters []string) (url.Values, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	if marker != "" {
		q.Set("marker", marker)
	}
	for _, f := range filters {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--filter %q: want KEY=VALUE", f)
		}
		q.Add(k, v)
	}
	return q, nil
}

// run makes the RunE of a command that talks to the service: it connects
// (authenticating when the settings say so) and hands body the client.
func (c *conn) run(body func(cmd *cobra.Command, args []string, cl *client.Client) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd.Context())
		if err != nil {
			return err
		}
		return body(cmd, args, cl)
	}
}
