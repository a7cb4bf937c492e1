package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

const poolsHelp = `Usage: token-orchestrator pools COMMAND [flags] [POOL]

Talk to a running server: give pools their policies, show, list and delete
them. A policy says what applies to its pool's keys and leases; what it
leaves unset is the server's setting (KEY_TTL, LEASE_TTL, ...):

  key life       --key-ttl 24h after a key's creation or last keep-alive,
                 or --keys-stay: keys live until deleted
  lease          --lease-ttl 2m after a claim or a keep-alive
  longest lease  --max-lease-ttl 1h from the claim, keep-alives included
  lease token    --require-lease-token: releases and keep-alives must name
                 their lease
  longest wait   --max-wait 10s for a claim that waits for a free key
  seats          --seats 4: each new key may be held by 4 leases at once
                 (a key's own seats, at creation or import, come first)

An import of secrets into a pool that has no policy gives it one whose keys
stay. Needs the admin token when the server asks for tokens.

Commands:
%s
Run 'token-orchestrator pools COMMAND -h' for a command's flags.

` + exitCodesHelp

var poolArg = argument{usage: "POOL", what: "pool"}

// poolsCommands are the commands of "pools", in the order of the help.
var poolsCommands = []serverCommand{poolsSet, poolsGet, poolsList, poolsDelete}

// poolsGroup is "pools".
var poolsGroup = serverGroup{
	name: "pools", help: poolsHelp, commands: poolsCommands,
	jsonHelp: "print the answer as JSON, as the server does",
}

func runPools(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return poolsGroup.run(args, stdout, stderr, getenv)
}

func poolsWords() words { return poolsGroup.words() }

// durationSetting is a duration of a policy on the command line: a
// duration, or "default" for the server's setting.
type durationSetting struct {
	set   bool
	value *time.Duration
}

func (d *durationSetting) String() string {
	if d == nil || d.value == nil {
		return ""
	}
	return d.value.String()
}

func (d *durationSetting) Set(text string) error {
	d.set = true
	if text == "default" {
		d.value = nil
		return nil
	}
	v, err := time.ParseDuration(text)
	if err != nil {
		return errors.New("expected a duration such as 30s, 5m or 24h, or default")
	}
	d.value = &v
	return nil
}

var poolsSet = serverCommand{name: "set", summary: "set a pool's policy: change what the flags say, keep the rest", arg: poolArg, flags: func(fs *flag.FlagSet) serverAction {
	var keyTTL, leaseTTL, maxLeaseTTL, maxWait durationSetting
	fs.Var(&keyTTL, "key-ttl", "a key's life after its creation or last keep-alive: a `duration` such as 24h, or default (the server's KEY_TTL)")
	keysStay := fs.Bool("keys-stay", false, "keys live until deleted (no key life)")
	fs.Var(&leaseTTL, "lease-ttl", "a lease's length after its claim or last keep-alive: a `duration` such as 2m, or default (the server's LEASE_TTL)")
	fs.Var(&maxLeaseTTL, "max-lease-ttl", "the longest a lease may last from its claim, keep-alives included: a `duration`, or default (no bound)")
	requireToken := fs.Bool("require-lease-token", false, "releases and keep-alives must name their lease (428 without); =false turns it off")
	fs.Var(&maxWait, "max-wait", "the longest a claim may wait for a free key: a `duration` of at most 60s, or default (60s)")
	seats := fs.Int("seats", 0, "seats of the pool's new keys (1 to 1000): how many leases may hold each at once; 0: default (1)")
	replace := fs.Bool("replace", false, "start from an empty policy instead of the pool's current one: what the flags leave out is the server's setting")
	return func(ctx context.Context, c *client.Client, pool string) (outcome, error) {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		switch {
		case given["key-ttl"] && given["keys-stay"]:
			return outcome{}, newBadValue("--key-ttl and --keys-stay exclude each other")
		case !*replace && !given["key-ttl"] && !given["keys-stay"] && !given["lease-ttl"] && !given["max-lease-ttl"] &&
			!given["require-lease-token"] && !given["max-wait"] && !given["seats"]:
			return outcome{}, newBadValue("nothing to set: give --key-ttl, --keys-stay, --lease-ttl, --max-lease-ttl, --require-lease-token, --max-wait or --seats (or --replace for an empty policy)")
		}
		var policy client.Policy
		if !*replace {
			// The server replaces a policy whole: start from the current one.
			current, err := c.GetPool(ctx, pool)
			switch {
			case errors.Is(err, client.ErrUnknownPool):
			case err != nil:
				return outcome{}, err
			default:
				policy = current.Policy
			}
		}
		if given["key-ttl"] {
			policy.KeyTTL, policy.KeysStay = keyTTL.value, false
		}
		if given["keys-stay"] {
			policy.KeyTTL, policy.KeysStay = nil, *keysStay
		}
		if given["lease-ttl"] {
			policy.LeaseTTL = leaseTTL.value
		}
		if given["max-lease-ttl"] {
			policy.MaxLeaseTTL = maxLeaseTTL.value
		}
		if given["require-lease-token"] {
			policy.RequireLeaseToken = *requireToken
		}
		if given["max-wait"] {
			policy.MaxWait = maxWait.value
		}
		if given["seats"] {
			policy.Seats = *seats
		}
		put, err := c.PutPool(ctx, pool, policy)
		if err != nil {
			return outcome{}, err
		}
		return outcome{json: put, write: func(w io.Writer) {
			fmt.Fprintf(w, "Set the policy of pool %s.\n", put.Name)
			if put.KeysRebased > 0 {
				fmt.Fprintf(w, "%s got the new key life.\n", count(put.KeysRebased, "key", "keys"))
			}
			printPool(w, put)
		}}, nil
	}
}}

var poolsGet = serverCommand{name: "get", summary: "show a pool: its policy, what applies, its counts", arg: poolArg, flags: func(fs *flag.FlagSet) serverAction {
	return func(ctx context.Context, c *client.Client, pool string) (outcome, error) {
		p, err := c.GetPool(ctx, pool)
		return outcome{json: p, write: func(w io.Writer) { printPool(w, p) }}, err
	}
}}

var poolsList = serverCommand{name: "list", summary: "list the pools that have keys or a policy", flags: func(fs *flag.FlagSet) serverAction {
	return func(ctx context.Context, c *client.Client, _ string) (outcome, error) {
		pools, err := c.ListPools(ctx)
		if pools == nil {
			pools = []client.Pool{}
		}
		return outcome{json: map[string]any{"pools": pools}, write: func(w io.Writer) { printPools(w, pools) }}, err
	}
}}

var poolsDelete = serverCommand{name: "delete", summary: "delete a pool's policy; refused while it has keys, unless --delete-keys", arg: poolArg, flags: func(fs *flag.FlagSet) serverAction {
	deleteKeys := fs.Bool("delete-keys", false, "delete the pool's keys too, for good, with their secrets")
	return func(ctx context.Context, c *client.Client, pool string) (outcome, error) {
		deleted, err := c.DeletePool(ctx, pool, *deleteKeys)
		if errors.Is(err, client.ErrPoolNotEmpty) {
			err = fmt.Errorf("%w\n--delete-keys deletes them too, for good, with their secrets", err)
		}
		headline := "Deleted pool " + pool + "."
		if deleted > 0 {
			headline = fmt.Sprintf("Deleted pool %s and its %s.", pool, count(deleted, "key", "keys"))
		}
		return outcome{headline: headline, json: map[string]any{"pool": pool, "deleted": true, "deletedKeys": deleted}}, err
	}
}}

// printPool shows a pool for people: each setting with what applies and
// where it comes from.
func printPool(w io.Writer, p client.Pool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "  %s\t%s\n", name, value) }
	// from says whether the pool's policy sets a value, or the server.
	from := func(set bool) string {
		if set {
			return " (policy)"
		}
		return " (server)"
	}
	row("pool", p.Name)
	if p.HasPolicy {
		row("policy", fmt.Sprintf("since %s, changed %s", formatTime(p.CreatedAt), formatTime(p.UpdatedAt)))
	} else {
		row("policy", "none: the server's settings apply")
	}
	if p.Seats != p.Keys {
		row("keys", fmt.Sprintf("%d, with %d seats (%d free, %d held)", p.Keys, p.Seats, p.Free, p.Held))
	} else {
		row("keys", fmt.Sprintf("%d (%d free, %d held)", p.Keys, p.Free, p.Held))
	}
	keyLife := "stays until deleted"
	if p.Effective.KeyTTL != nil {
		keyLife = p.Effective.KeyTTL.String() + " after creation or the last keep-alive"
	}
	row("key life", keyLife+from(p.Policy.KeysStay || p.Policy.KeyTTL != nil))
	row("lease", p.Effective.LeaseTTL.String()+" after a claim or keep-alive"+from(p.Policy.LeaseTTL != nil))
	longest := "no bound but keep-alives"
	if p.Effective.MaxLeaseTTL != nil {
		longest = p.Effective.MaxLeaseTTL.String() + " from the claim"
	}
	row("longest lease", longest+from(p.Policy.MaxLeaseTTL != nil))
	token := "not required"
	if p.Effective.RequireLeaseToken {
		token = "required for releases and keep-alives"
	}
	row("lease token", token+from(p.Policy.RequireLeaseToken))
	row("longest wait", p.Effective.MaxWait.String()+from(p.Policy.MaxWait != nil))
	_ = tw.Flush()
}

// printPools shows the pools as a table, one a line, with what applies.
func printPools(w io.Writer, pools []client.Pool) {
	if len(pools) == 0 {
		fmt.Fprintln(w, "No pool has keys or a policy.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tPOLICY\tKEYS\tSEATS\tFREE\tHELD\tKEY LIFE\tLEASE\tLONGEST LEASE\tLEASE TOKEN\tLONGEST WAIT")
	for _, p := range pools {
		policy, keyLife, longest, token := "-", "stays", "-", "-"
		if p.HasPolicy {
			policy = "yes"
		}
		if p.Effective.KeyTTL != nil {
			keyLife = p.Effective.KeyTTL.String()
		}
		if p.Effective.MaxLeaseTTL != nil {
			longest = p.Effective.MaxLeaseTTL.String()
		}
		if p.Effective.RequireLeaseToken {
			token = "required"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Name, policy, p.Keys, p.Seats, p.Free, p.Held,
			keyLife, p.Effective.LeaseTTL, longest, token, p.Effective.MaxWait)
	}
	_ = tw.Flush()
}
