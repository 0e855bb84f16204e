package localcluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// IptablesTable is one table of an iptables-save dump.
type IptablesTable struct {
	Name string
	// Chains maps every chain of the table to whether it is built in (it has a policy).
	Chains map[string]bool
	// Policies holds the policy of each built-in chain.
	Policies map[string]string
	Rules    []IptablesRule
}

// HasChain reports whether the table has the chain, built in or not.
func (t *IptablesTable) HasChain(chain string) bool {
	_, ok := t.Chains[chain]
	return ok
}

// IptablesRule is one "-A CHAIN SPEC" line of an iptables-save dump.
type IptablesRule struct {
	Chain string
	// Spec is the rule after "-A CHAIN ", exactly as iptables-save printed it (quotes included),
	// so iptables-restore accepts it back in a "-D CHAIN SPEC" line.
	Spec string
	// Target is the chain or target of -j/-g, Comment the text of --comment, both unquoted.
	Target  string
	Comment string
}

// IptablesRuleset is an iptables-save dump: its tables by name.
type IptablesRuleset map[string]*IptablesTable

// ParseIptablesSave reads the output of iptables-save (or ip6tables-save). Counters are ignored.
func ParseIptablesSave(dump string) (IptablesRuleset, error) {
	ruleset := IptablesRuleset{}
	var table *IptablesTable
	scanner := bufio.NewScanner(strings.NewReader(dump))
	scanner.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for n := 1; scanner.Scan(); n++ {
		line := strings.TrimSpace(scanner.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			name := line[1:]
			if ruleset[name] == nil {
				ruleset[name] = &IptablesTable{Name: name, Chains: map[string]bool{}, Policies: map[string]string{}}
			}
			table = ruleset[name]
		case line == "COMMIT":
			table = nil
		case table == nil:
			return nil, fmt.Errorf("line %d of iptables-save output is outside a table: %q", n, line)
		case strings.HasPrefix(line, ":"):
			fields := strings.Fields(line[1:])
			if len(fields) < 2 {
				return nil, fmt.Errorf("line %d of iptables-save output: malformed chain %q", n, line)
			}
			table.Chains[fields[0]] = fields[1] != "-"
			if fields[1] != "-" {
				table.Policies[fields[0]] = fields[1]
			}
		case strings.HasPrefix(line, "-A "):
			rule, err := parseIptablesRule(strings.TrimPrefix(line, "-A "))
			if err != nil {
				return nil, fmt.Errorf("line %d of iptables-save output: %w", n, err)
			}
			table.Rules = append(table.Rules, rule)
		default:
			return nil, fmt.Errorf("line %d of iptables-save output is not a chain or a rule: %q", n, line)
		}
	}
	return ruleset, scanner.Err()
}

func parseIptablesRule(chainAndSpec string) (IptablesRule, error) {
	chain, spec, _ := strings.Cut(chainAndSpec, " ")
	if chain == "" {
		return IptablesRule{}, fmt.Errorf("rule without a chain: %q", chainAndSpec)
	}
	words, err := splitIptablesWords(spec)
	if err != nil {
		return IptablesRule{}, err
	}
	rule := IptablesRule{Chain: chain, Spec: spec}
	for i := 0; i+1 < len(words); i++ {
		switch words[i] {
		case "-j", "--jump", "-g", "--goto":
			rule.Target = words[i+1]
		case "--comment":
			rule.Comment = words[i+1]
		}
	}
	return rule, nil
}

// splitIptablesWords splits a rule as iptables-save quotes it: words separated by spaces, a
// double-quoted word may hold spaces and backslash-escaped quotes and backslashes.
func splitIptablesWords(spec string) ([]string, error) {
	var words []string
	var word strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(spec); i++ {
		ch := spec[i]
		switch {
		case quoted && ch == '\\' && i+1 < len(spec) && (spec[i+1] == '"' || spec[i+1] == '\\'):
			i++
			word.WriteByte(spec[i])
		case ch == '"':
			quoted = !quoted
			inWord = true
		case !quoted && (ch == ' ' || ch == '\t'):
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteByte(ch)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in rule %q", spec)
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

// IptablesOwner says which chains and rules the cluster's components create: kube-proxy and the
// kubelet name their chains KUBE-*, the CNI plugins CNI-* and mark their rules with a comment
// naming the CNI network.
type IptablesOwner struct {
	CNINetwork string
}

func (o IptablesOwner) ownsChainName(chain string) bool {
	return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-")
}

// cniNetwork returns the network named in a CNI plugin's rule comment (`name: "meshlift" id: "…"`,
// `dnat name: "meshlift" id: "…"`), or "" when the comment is not a CNI plugin's.
func cniNetwork(comment string) string {
	_, rest, ok := strings.Cut(comment, `name: "`)
	if !ok {
		return ""
	}
	network, _, ok := strings.Cut(rest, `"`)
	if !ok {
		return ""
	}
	return network
}

// IptablesCleanup is what `down` removes from one table: first DeleteRules (rules that stay
// otherwise, e.g. the jumps into our chains from built-in chains), then it flushes and deletes
// DeleteChains. Kept lists what appeared while the cluster ran but is not recognisably the
// cluster's; it is left in place and reported.
type IptablesCleanup struct {
	Table        string
	DeleteRules  []IptablesRule
	DeleteChains []string
	Kept         []string
}

// Empty reports whether there is nothing to remove.
func (p IptablesCleanup) Empty() bool { return len(p.DeleteRules) == 0 && len(p.DeleteChains) == 0 }

// PlanIptablesCleanup compares the dump taken before the cluster started with the current one and
// returns, per table, what the cluster created: chains that did not exist before and carry the
// names kube-proxy, the kubelet and the CNI plugins give theirs (a CNI chain used by another CNI
// network is not ours), rules that did not exist before and jump into those chains or carry our
// CNI network's comment. Nothing that existed before is ever removed. With before nil (a cluster
// of an older version recorded nothing) every chain and rule counts as new.
func PlanIptablesCleanup(before, current IptablesRuleset, owner IptablesOwner) []IptablesCleanup {
	var plans []IptablesCleanup
	for _, name := range sortedTables(current) {
		table := current[name]
		var beforeTable *IptablesTable
		if before != nil {
			beforeTable = before[name]
		}
		existedBefore := func(chain string) bool { return beforeTable != nil && beforeTable.HasChain(chain) }
		newRules := rulesAddedSince(beforeTable, table)

		// A CNI chain that holds, or is jumped to by, another CNI network's rule is shared or not ours.
		foreignCNIChains := map[string]bool{}
		for _, rule := range newRules {
			if network := cniNetwork(rule.Comment); network != "" && network != owner.CNINetwork {
				for _, chain := range []string{rule.Chain, rule.Target} {
					if strings.HasPrefix(chain, "CNI-") {
						foreignCNIChains[chain] = true
					}
				}
			}
		}
		plan := IptablesCleanup{Table: name}
		deleted, kept := map[string]bool{}, map[string]bool{}
		for _, chain := range sortedChains(table) {
			switch builtin := table.Chains[chain]; {
			case builtin || existedBefore(chain):
			case owner.ownsChainName(chain) && !foreignCNIChains[chain]:
				deleted[chain] = true
				plan.DeleteChains = append(plan.DeleteChains, chain)
			case before != nil: // without a record, anything else may well predate the cluster
				kept[chain] = true
				plan.Kept = append(plan.Kept, "chain "+chain)
			}
		}
		for _, rule := range newRules {
			switch {
			case deleted[rule.Chain]: // goes with its chain
			case deleted[rule.Target] || (owner.CNINetwork != "" && cniNetwork(rule.Comment) == owner.CNINetwork):
				plan.DeleteRules = append(plan.DeleteRules, rule)
			case kept[rule.Chain]: // stays with its chain, reported already
			case before != nil:
				plan.Kept = append(plan.Kept, "rule -A "+rule.Chain+" "+rule.Spec)
			}
		}
		if !plan.Empty() || len(plan.Kept) > 0 {
			plans = append(plans, plan)
		}
	}
	return plans
}

// TablesToDelete returns the tables of current that did not exist before and hold nothing: no
// rule, no chain but the built-in ones, each with the policy ACCEPT. With the nf_tables backend the
// first iptables command that names a table creates it, so the cluster's components create the
// tables they use; with before nil (no record) it returns none.
func TablesToDelete(before, current IptablesRuleset) []string {
	if before == nil {
		return nil
	}
	var empty []string
	for _, name := range sortedTables(current) {
		if _, existed := before[name]; existed {
			continue
		}
		table := current[name]
		isEmpty := len(table.Rules) == 0
		for chain, builtin := range table.Chains {
			if !builtin || table.Policies[chain] != "ACCEPT" {
				isEmpty = false
			}
		}
		if isEmpty {
			empty = append(empty, name)
		}
	}
	return empty
}

// rulesAddedSince returns the rules of current that before does not hold, counting duplicates:
// a rule present once before and twice now was added once.
func rulesAddedSince(before, current *IptablesTable) []IptablesRule {
	remaining := map[[2]string]int{}
	if before != nil {
		for _, rule := range before.Rules {
			remaining[[2]string{rule.Chain, rule.Spec}]++
		}
	}
	var added []IptablesRule
	for _, rule := range current.Rules {
		key := [2]string{rule.Chain, rule.Spec}
		if remaining[key] > 0 {
			remaining[key]--
			continue
		}
		added = append(added, rule)
	}
	return added
}

func sortedTables(ruleset IptablesRuleset) []string {
	names := make([]string, 0, len(ruleset))
	for name := range ruleset {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func sortedChains(table *IptablesTable) []string {
	names := make([]string, 0, len(table.Chains))
	for name := range table.Chains {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// RestoreLines renders the plan as iptables-restore --noflush input lines (without the table
// header and COMMIT): rule deletions, then flushes, then chain deletions (chains may jump to each
// other, so none is deleted before all are flushed).
func (p IptablesCleanup) RestoreLines() []string {
	var lines []string
	for _, rule := range p.DeleteRules {
		lines = append(lines, "-D "+rule.Chain+" "+rule.Spec)
	}
	for _, chain := range p.DeleteChains {
		lines = append(lines, "-F "+chain)
	}
	for _, chain := range p.DeleteChains {
		lines = append(lines, "-X "+chain)
	}
	return lines
}

func restoreScript(table string, lines []string) string {
	return "*" + table + "\n" + strings.Join(lines, "\n") + "\nCOMMIT\n"
}

// IptablesFamily is one iptables front end: IPv4 or IPv6.
type IptablesFamily struct {
	Save, Restore string
	// NFProto is the family's netfilter protocol, which names its nf_tables tables.
	NFProto uint8
}

// IptablesFamilies are recorded by `up` and cleaned by `down`: the same commands (from PATH) that
// kube-proxy and the kubelet use.
var IptablesFamilies = []IptablesFamily{
	{Save: "iptables-save", Restore: "iptables-restore", NFProto: unix.NFPROTO_IPV4},
	{Save: "ip6tables-save", Restore: "ip6tables-restore", NFProto: unix.NFPROTO_IPV6},
}

// saveIptables returns the family's current rules, or an error when it is unusable here.
func saveIptables(family IptablesFamily) (string, error) {
	out, err := exec.Command(family.Save).Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return "", fmt.Errorf("%s failed: %w: %s", family.Save, err, bytes.TrimSpace(exitErr.Stderr))
		}
		return "", fmt.Errorf("%s failed: %w", family.Save, err)
	}
	return string(out), nil
}

// cleanIptables removes from the family what PlanIptablesCleanup finds the cluster created since
// before (nil: unknown). Each table is changed in one iptables-restore transaction; when that
// fails, line by line, so one stale line does not keep the rest in place. Then, with the nf_tables
// backend, it deletes the tables the cluster's components created and that are empty now. It
// returns what it removed, and what it left in place for the caller to report.
func cleanIptables(family IptablesFamily, before IptablesRuleset, owner IptablesOwner) (removed []string, kept []string, err error) {
	dump, err := saveIptables(family)
	if err != nil {
		return nil, nil, err
	}
	current, err := ParseIptablesSave(dump)
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, plan := range PlanIptablesCleanup(before, current, owner) {
		for _, what := range plan.Kept {
			kept = append(kept, plan.Table+": "+what)
		}
		if plan.Empty() {
			continue
		}
		summary := fmt.Sprintf("%s: %d rules, %d chains", plan.Table, len(plan.DeleteRules), len(plan.DeleteChains))
		lines := plan.RestoreLines()
		if runRestore(family, restoreScript(plan.Table, lines)) == nil {
			removed = append(removed, summary)
			continue
		}
		failed := 0
		for _, line := range lines {
			if err := runRestore(family, restoreScript(plan.Table, []string{line})); err != nil {
				failed++
				errs = append(errs, fmt.Errorf("%s -t %s %s: %w", family.Restore, plan.Table, line, err))
			}
		}
		removed = append(removed, fmt.Sprintf("%s (%d of %d changes failed)", summary, failed, len(lines)))
	}
	if errors.Join(errs...) != nil || !nftablesBackend(family) {
		return removed, kept, errors.Join(errs...)
	}
	if dump, err = saveIptables(family); err == nil {
		current, err = ParseIptablesSave(dump)
	}
	if err != nil {
		return removed, kept, err
	}
	for _, table := range TablesToDelete(before, current) {
		if err := deleteNftTable(family.NFProto, table); err != nil {
			errs = append(errs, fmt.Errorf("failed to delete the empty nf_tables table %s, which the cluster created: %w", table, err))
		} else {
			removed = append(removed, "table "+table+" (empty, created by the cluster)")
		}
	}
	return removed, kept, errors.Join(errs...)
}

// nftablesBackend reports whether the family's commands use the nf_tables backend ("iptables
// v1.8.9 (nf_tables)"); with the legacy backend tables are not created on use.
func nftablesBackend(family IptablesFamily) bool {
	out, err := exec.Command(family.Save, "--version").CombinedOutput()
	return err == nil && strings.Contains(string(out), "nf_tables")
}

func runRestore(family IptablesFamily, script string) error {
	cmd := exec.Command(family.Restore, "--noflush", "-w")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}
