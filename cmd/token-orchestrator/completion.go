package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

const completionHelp = `Usage: token-orchestrator completion bash|zsh|fish

Print a script that completes the commands, subcommands (keys get, migrate
up, report names, ...) and flags of token-orchestrator in a shell.

  bash  source <(token-orchestrator completion bash)
        or save it as /etc/bash_completion.d/token-orchestrator
  zsh   source <(token-orchestrator completion zsh)
        or save it as _token-orchestrator in a directory of $fpath
  fish  token-orchestrator completion fish | source
        or save it as ~/.config/fish/completions/token-orchestrator.fish`

// shells maps each shell to the writer of its script.
var shells = map[string]func(io.Writer, []path){
	"bash": writeBash,
	"zsh":  writeZsh,
	"fish": writeFish,
}

func completionWords() words {
	return words{subcommands: []subcommand{
		{name: "bash", summary: "the script for bash"},
		{name: "zsh", summary: "the script for zsh"},
		{name: "fish", summary: "the script for fish"},
	}}
}

func runCompletion(args []string, stdout, stderr io.Writer, _ func(string) string) int {
	fs := newFlagSet("token-orchestrator completion", completionHelp, stderr)
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	if len(positional) != 1 {
		return usageError(fs, "expected one shell: bash, zsh or fish")
	}
	write, ok := shells[positional[0]]
	if !ok {
		msg := fmt.Sprintf("unknown shell %q; expected bash, zsh or fish", positional[0])
		if suggestion := didYouMean(positional[0], []string{"bash", "zsh", "fish"}); suggestion != "" {
			msg += "\n" + strings.TrimSuffix(suggestion, "\n")
		}
		return usageError(fs, "%s", msg)
	}
	write(stdout, completionPaths())
	return exitOK
}

// path is a place on a command line that completion knows: the command and
// subcommand names typed so far (words, "" at the start), and what may come
// next there.
type path struct {
	words    string
	children []completionWord
	flags    []completionWord
}

// completionWord is a command, subcommand or flag name offered, with its
// description.
type completionWord struct {
	name, summary string
	// takesValue: a flag followed by its value, which is no command name.
	takesValue bool
}

// completionPaths walks the command table: every command, its subcommands,
// and "help" followed by either.
func completionPaths() []path {
	help := completionWord{name: "help", summary: "show the help"}
	flagWords := func(fs *flag.FlagSet) []completionWord {
		var flags []completionWord
		if fs != nil {
			fs.VisitAll(func(f *flag.Flag) {
				_, usage := flag.UnquoteUsage(f)
				b, ok := f.Value.(interface{ IsBoolFlag() bool })
				flags = append(flags, completionWord{name: f.Name, summary: firstLine(usage), takesValue: !ok || !b.IsBoolFlag()})
			})
		}
		return append(flags, help)
	}

	root := path{words: ""}
	helpPath := path{words: "help", flags: flagWords(nil)}
	var paths []path
	for _, name := range commandNames() {
		cmd := commands[name]
		root.children = append(root.children, completionWord{name: name, summary: cmd.summary})
		helpPath.children = append(helpPath.children, completionWord{name: name, summary: cmd.summary})
		var w words
		if cmd.words != nil {
			w = cmd.words()
		}
		p := path{words: name, flags: flagWords(w.flags)}
		helped := path{words: "help " + name, flags: flagWords(nil)}
		for _, sub := range w.subcommands {
			p.children = append(p.children, completionWord{name: sub.name, summary: sub.summary})
			helped.children = append(helped.children, completionWord{name: sub.name, summary: sub.summary})
			fs := sub.flags
			if fs == nil {
				fs = w.flags
			}
			paths = append(paths, path{words: name + " " + sub.name, flags: flagWords(fs)})
		}
		if name == "help" {
			continue
		}
		paths = append(paths, p)
		if len(helped.children) > 0 {
			paths = append(paths, helped)
		}
		if name == "serve" {
			// Without a command the binary serves: its flags come first.
			root.flags = append(flagWords(w.flags), completionWord{name: "version", summary: "print the version and exit"})
		}
	}
	paths = append(paths, helpPath)
	paths = append([]path{root}, paths...)
	slices.SortStableFunc(paths, func(a, b path) int { return strings.Compare(a.words, b.words) })
	return paths
}

// valuedFlags are the names of the flags that take a value, on any path:
// completion skips the value that follows them.
func valuedFlags(paths []path) []string {
	var names []string
	for _, p := range paths {
		for _, f := range p.flags {
			if f.takesValue && !slices.Contains(names, f.name) {
				names = append(names, f.name)
			}
		}
	}
	slices.Sort(names)
	return names
}

func names(ws []completionWord, prefix string) string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = prefix + w.name
	}
	return strings.Join(out, " ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// shellQuote quotes s for bash and zsh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// fishQuote quotes s for fish, where a backslash escapes inside quotes too.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// writeBash writes a script for bash: a function that finds where the
// command line is (its command and subcommand names, skipping flags and
// their values) and offers what may come next there.
func writeBash(w io.Writer, paths []path) {
	fmt.Fprintf(w, `# bash completion for token-orchestrator. Load it with
#   source <(token-orchestrator completion bash)
# or save it as /etc/bash_completion.d/token-orchestrator.

# _token_orchestrator_words WORDS sets subs and flags to what may follow the
# command and subcommand names WORDS; it fails for names it does not know.
_token_orchestrator_words() {
    case "$1" in
`)
	for _, p := range paths {
		fmt.Fprintf(w, "    %s) subs=%s; flags=%s ;;\n", shellQuote(p.words), shellQuote(names(p.children, "")), shellQuote(names(p.flags, "--")))
	}
	fmt.Fprintf(w, `    *) return 1 ;;
    esac
}

_token_orchestrator() {
    local cur="${COMP_WORDS[COMP_CWORD]}" at="" next word i subs flags
    # Flags that take a value, whose value is no command name.
    local valued=%s
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
        -*=*) ;;
        -*)
            word="${word#-}"
            if [[ " $valued " == *" ${word#-} "* ]]; then
                ((i++))
                # The value is being typed: nothing to offer.
                ((i == COMP_CWORD)) && { COMPREPLY=(); return; }
            fi
            ;;
        *)
            next="${at:+$at }$word"
            _token_orchestrator_words "$next" && at="$next"
            ;;
        esac
    done
    _token_orchestrator_words "$at"
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    fi
}

complete -F _token_orchestrator token-orchestrator
`, shellQuote(strings.Join(valuedFlags(paths), " ")))
}

// writeZsh writes a script for zsh: the same walk as bash's, offering
// each word with its description.
func writeZsh(w io.Writer, paths []path) {
	described := func(ws []completionWord, prefix string) string {
		out := make([]string, len(ws))
		for i, cw := range ws {
			out[i] = shellQuote(prefix + cw.name + ":" + cw.summary)
		}
		return strings.Join(out, " ")
	}
	fmt.Fprintf(w, `#compdef token-orchestrator
# zsh completion for token-orchestrator. Load it with
#   source <(token-orchestrator completion zsh)
# or save it as _token-orchestrator in a directory of $fpath.

# _token_orchestrator_words WORDS sets subs and flags to what may follow the
# command and subcommand names WORDS; it fails for names it does not know.
_token_orchestrator_words() {
    case "$1" in
`)
	for _, p := range paths {
		fmt.Fprintf(w, "    %s) subs=(%s); flags=(%s) ;;\n", shellQuote(p.words), described(p.children, ""), described(p.flags, "--"))
	}
	fmt.Fprintf(w, `    *) return 1 ;;
    esac
}

_token_orchestrator() {
    local -a subs flags
    local at="" next word
    local -i i
    # Flags that take a value, whose value is no command name.
    local valued=%s
    for ((i = 2; i < CURRENT; i++)); do
        word="${words[i]}"
        case "$word" in
        -*=*) ;;
        -*)
            word="${word#-}"
            if [[ " $valued " == *" ${word#-} "* ]]; then
                ((i++))
                # The value is being typed: nothing to offer.
                ((i == CURRENT)) && return 1
            fi
            ;;
        *)
            next="${at:+$at }$word"
            _token_orchestrator_words "$next" && at="$next"
            ;;
        esac
    done
    _token_orchestrator_words "$at"
    if [[ "${words[CURRENT]}" == -* ]]; then
        _describe -t flags 'flag' flags
    else
        _describe -t commands 'command' subs
    fi
}

if [[ "${funcstack[1]}" == "_token-orchestrator" ]]; then
    # Autoloaded from $fpath: this file is the completion function.
    _token_orchestrator "$@"
else
    compdef _token_orchestrator token-orchestrator
fi
`, shellQuote(strings.Join(valuedFlags(paths), " ")))
}

// writeFish writes a script for fish: one complete line for each word,
// offered where __token_orchestrator_at says the command line is.
func writeFish(w io.Writer, paths []path) {
	var known []string
	for _, p := range paths {
		known = append(known, fishQuote(p.words))
	}
	var valued []string
	for _, name := range valuedFlags(paths) {
		valued = append(valued, fishQuote(name))
	}
	fmt.Fprintf(w, `# fish completion for token-orchestrator. Load it with
#   token-orchestrator completion fish | source
# or save it as ~/.config/fish/completions/token-orchestrator.fish.

# __token_orchestrator_at WORDS succeeds when the command and subcommand
# names on the command line, flags and their values skipped, are WORDS.
function __token_orchestrator_at --argument-names want
    set -l known %s
    # Flags that take a value, whose value is no command name.
    set -l valued %s
    set -l at ''
    set -l skip 0
    for word in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $word
            case '-*=*'
            case '-*'
                if contains -- (string replace -r -- '^--?' '' $word) $valued
                    set skip 1
                end
            case '*'
                set -l next $word
                if test -n "$at"
                    set next "$at $word"
                end
                if contains -- $next $known
                    set at $next
                end
        end
    end
    # The value of a flag is being typed: nothing to offer.
    test $skip = 0; and test "$at" = "$want"
end

complete -c token-orchestrator -f
`, strings.Join(known, " "), strings.Join(valued, " "))
	for _, p := range paths {
		cond := fishQuote("__token_orchestrator_at " + fishQuote(p.words))
		for _, c := range p.children {
			fmt.Fprintf(w, "complete -c token-orchestrator -n %s -a %s -d %s\n", cond, fishQuote(c.name), fishQuote(c.summary))
		}
		for _, f := range p.flags {
			required := ""
			if f.takesValue {
				required = " -r"
			}
			fmt.Fprintf(w, "complete -c token-orchestrator -n %s -l %s%s -d %s\n", cond, fishQuote(f.name), required, fishQuote(f.summary))
		}
	}
}
