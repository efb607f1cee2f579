//! Every setting, declared once: its environment variable, its key in the
//! `DEPLOY_GUARD_CONFIG` file (also its name in [`Overrides::settings`]), its default as
//! shown, its bounds, its meaning in one line, and how its text is read and applied.
//!
//! Drawn from [`SETTINGS`]: the loader ([`Config::load_from`]), the settings that
//! `deploy-guard --help` lists ([`help`]) and the README's configuration table
//! ([`markdown_table`]; a test here fails when the README's differs, printing the table
//! to paste). A new setting is one more entry here, a field of [`Config`] for it, and
//! the README table pasted again.

use crate::config::{
    Config, DEFAULT_DB, DEFAULT_POLICY, DEFAULT_SELF_HOSTING, LogFormat, Overrides, parse_bool, parse_number,
    sanitise_scope, split_csv,
};
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// The environment variable.
    pub env: &'static str,
    /// The config file's key, which is also the setting's name in
    /// [`Overrides::settings`] (the Python `Guard(**settings)`); none for
    /// [`CONFIG_FILE`], which names the file.
    pub key: Option<&'static str>,
    /// The default, as shown.
    pub default: Shown,
    /// What the setting means, in one line of Markdown (code in backquotes); a
    /// number's bounds follow it when shown ([`Setting::meaning_shown`]).
    pub meaning: &'static str,
    /// How its text is read and applied.
    pub(crate) kind: Kind,
}

/// A default as shown.
#[derive(Clone, Copy, Debug)]
pub enum Shown {
    /// A value of the setting: given as such, it changes nothing.
    Value(&'static str),
    /// What holds when the setting is not given, in words (Markdown).
    Words(&'static str),
}

/// How a setting's text is read and applied. Its text comes from the config file (or
/// the settings laid over it), where the value must be of the kind's [`FileType`],
/// else from the environment.
#[derive(Debug)]
pub(crate) enum Kind {
    /// Names the config file ([`CONFIG_FILE`]): no key of it.
    ConfigFile,
    /// A path, taken as given (in the file: a string); `flag`, the override of the same
    /// meaning, wins over both.
    Path {
        field: fn(&mut Config) -> &mut PathBuf,
        flag: fn(&Overrides) -> Option<&PathBuf>,
    },
    /// true/false/1/0/yes/no/on/off in any case ([`parse_bool`]); anything else is
    /// false, with a warning that ends with `otherwise`: what false means.
    Bool {
        field: fn(&mut Config) -> &mut bool,
        otherwise: &'static str,
    },
    /// A whole number from `min` to `max` ([`parse_number`]); anything else keeps the
    /// default, with a warning.
    Number {
        min: u64,
        max: u64,
        set: fn(&mut Config, u64),
    },
    /// Repos: a CSV; in the file also an array of strings. Anything else in the array
    /// is dropped, and a value of any other type ignored, with a warning each. `set`
    /// gets the text and where it came from.
    Repos(fn(&mut Config, &Given)),
    /// A CSV ([`split_csv`]).
    Csv(fn(&mut Config, Vec<String>)),
    /// A string (in the file, nothing else), applied by the function.
    Text(fn(&mut Config, &str)),
    /// A file of deploy-guard's own, none when the variable is blank; a blank value in
    /// the config file is a problem.
    OwnFile(fn(&mut Config) -> &mut Option<PathBuf>),
}

/// What a value in the config file must be; serde's words name the type when it is
/// not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileType {
    /// A string, as a path.
    Path,
    /// A string.
    String,
    /// Anything; read as its text (a string as itself, an array's items joined by
    /// commas, any other value as TOML writes it).
    Any,
}

/// Where a setting's text came from, as its warnings name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The environment variable.
    Env(&'static str),
    /// The config file's key (or the setting of that name laid over it).
    File(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env(variable) => f.write_str(variable),
            Source::File(key) => write!(f, "config file key `{key}`"),
        }
    }
}

/// A setting's text as given, and where from.
#[derive(Debug)]
pub(crate) struct Given {
    pub(crate) source: Source,
    pub(crate) text: String,
}

/// `DEPLOY_GUARD_CONFIG`: where the other settings' keys are read from.
pub const CONFIG_FILE: Setting = Setting {
    env: "DEPLOY_GUARD_CONFIG",
    key: None,
    default: Shown::Words("unset"),
    meaning: "the TOML file; `serve` re-reads it within a second of a change",
    kind: Kind::ConfigFile,
};

/// Every setting, in the order they are read (so their warnings come in this order)
/// and shown.
pub static SETTINGS: &[Setting] = &[
    Setting {
        env: "DEPLOY_GUARD_DB",
        key: Some("db"),
        default: Shown::Value(DEFAULT_DB),
        meaning: "the orchestrator's SQLite file, opened read-only, never created",
        kind: Kind::Path {
            field: |c| &mut c.db,
            flag: |o| o.db.as_ref(),
        },
    },
    Setting {
        env: "DEPLOY_GUARD_POLICY",
        key: Some("policy"),
        default: Shown::Value(DEFAULT_POLICY),
        meaning: "the active policy component",
        kind: Kind::Path {
            field: |c| &mut c.policy,
            flag: |o| o.policy.as_ref(),
        },
    },
    Setting {
        env: "DEPLOY_STATUS_GUARD_ENABLED",
        key: Some("enabled"),
        default: Shown::Value("true"),
        meaning: "kill-switch: true/false/1/0/yes/no/on/off in any case; anything else disables the guard with a \
                  warning (verdict ALLOW, rule `kill-switch`)",
        kind: Kind::Bool {
            field: |c| &mut c.enabled,
            otherwise: "the guard is disabled, every verdict is ALLOW",
        },
    },
    Setting {
        env: "DEPLOY_STATUS_GUARD_REPOS",
        key: Some("repos"),
        default: Shown::Words("empty"),
        meaning: "CSV scope; tokens not matching `^[A-Za-z0-9._-]+$` are dropped with one warning each at load; \
                  empty: self-hosting repos only",
        kind: Kind::Repos(|c, given| {
            c.scope_repos = sanitise_scope(&given.text, &given.source.to_string(), &mut c.warnings);
        }),
    },
    Setting {
        env: "DEPLOY_GUARD_SELF_HOSTING_REPOS",
        key: Some("self_hosting_repos"),
        default: Shown::Value(DEFAULT_SELF_HOSTING),
        meaning: "CSV",
        kind: Kind::Repos(|c, given| c.self_hosting_repos = split_csv(&given.text)),
    },
    Setting {
        env: "DEPLOY_GUARD_LOG",
        key: Some("log"),
        default: Shown::Value("text"),
        meaning: "`text` or `json` log lines on stderr; `RUST_LOG` filters",
        kind: Kind::Text(|c, text| match text.trim().to_ascii_lowercase().as_str() {
            "text" => c.log = LogFormat::Text,
            "json" => c.log = LogFormat::Json,
            other => c
                .warnings
                .push(format!("log format {other:?} is neither text nor json: using text")),
        }),
    },
    CONFIG_FILE,
    Setting {
        env: "DEPLOY_GUARD_TIMEOUT_MS",
        key: Some("timeout_ms"),
        default: Shown::Value("100"),
        meaning: "wall-clock deadline of one decision (epoch interruption)",
        kind: Kind::Number {
            min: 1,
            max: 60_000,
            set: |c, ms| c.limits.timeout = Duration::from_millis(ms),
        },
    },
    Setting {
        env: "DEPLOY_GUARD_FUEL",
        key: Some("fuel"),
        default: Shown::Value("100000000"),
        meaning: "fuel (about one unit per wasm instruction) of one decision",
        kind: Kind::Number {
            min: 10_000,
            max: 10_000_000_000,
            set: |c, fuel| c.limits.fuel = fuel,
        },
    },
    Setting {
        env: "DEPLOY_GUARD_MEMORY_MIB",
        key: Some("memory_mib"),
        default: Shown::Value("16"),
        meaning: "linear memory of one policy instance",
        kind: Kind::Number {
            min: 1,
            max: 1024,
            set: |c, mib| c.limits.memory_bytes = usize::try_from(mib << 20).unwrap_or(usize::MAX),
        },
    },
    Setting {
        env: "DEPLOY_GUARD_BUSY_TIMEOUT_MS",
        key: Some("busy_timeout_ms"),
        default: Shown::Value("250"),
        meaning: "how long a read waits for the orchestrator's write lock before failing safe",
        kind: Kind::Number {
            min: 0,
            max: 60_000,
            set: |c, ms| c.busy_timeout = Duration::from_millis(ms),
        },
    },
    Setting {
        env: "DEPLOY_GUARD_CACHE",
        key: Some("cache"),
        default: Shown::Words("`~/.cache/deploy-guard`"),
        meaning: "where compiled policies are kept (`off`: compile every start); by default under \
                  `$XDG_CACHE_HOME` when that is set",
        // The default, from the environment, is the loader's starting point.
        kind: Kind::Text(|c, dir| {
            let off = matches!(
                dir.trim().to_ascii_lowercase().as_str(),
                "" | "off" | "none" | "false" | "0"
            );
            c.cache = (!off).then(|| PathBuf::from(dir));
        }),
    },
    Setting {
        env: "DEPLOY_GUARD_LEDGER",
        key: Some("ledger"),
        default: Shown::Words("unset"),
        meaning: "the decision ledger, an SQLite file of deploy-guard's own (off by default)",
        kind: Kind::OwnFile(|c| &mut c.ledger),
    },
    Setting {
        env: "DEPLOY_GUARD_LEDGER_MAX_ROWS",
        key: Some("ledger_max_rows"),
        default: Shown::Value("1000000"),
        meaning: "the ledger keeps the newest this many decisions",
        kind: Kind::Number {
            min: 1_000,
            max: 1_000_000_000,
            set: |c, rows| c.ledger_max_rows = rows,
        },
    },
    Setting {
        env: "DEPLOY_GUARD_METRICS_ADDR",
        key: Some("metrics_addr"),
        default: Shown::Words("unset"),
        meaning: "where `serve` serves `GET /metrics` (`PORT` or `HOST:PORT`; a port alone binds 127.0.0.1); \
                  `serve --metrics ADDR` overrides it; read at start-up",
        kind: Kind::Text(|c, addr| c.metrics_addr = Some(addr.to_owned()).filter(|a| !a.trim().is_empty())),
    },
    Setting {
        env: "DEPLOY_GUARD_TRUSTED_KEYS",
        key: Some("trusted_keys"),
        default: Shown::Words("unset"),
        meaning: "CSV of public-key files; when set, every policy must carry a valid signature by one of them \
                  before the gate (see \"Rolling out to a fleet\" in the README)",
        kind: Kind::Csv(|c, keys| c.trusted_keys = keys.into_iter().map(PathBuf::from).collect()),
    },
    Setting {
        env: "DEPLOY_GUARD_POLL_MS",
        key: Some("poll_ms"),
        default: Shown::Value("30000"),
        meaning: "how often an `oci://` policy's tag is resolved",
        kind: Kind::Number {
            min: 100,
            max: 86_400_000,
            set: |c, ms| c.poll = Duration::from_millis(ms),
        },
    },
    Setting {
        env: "DEPLOY_GUARD_REGISTRY_INSECURE",
        key: Some("registry_insecure"),
        default: Shown::Words("unset"),
        meaning: "CSV of `host:port` registries allowed over plain HTTP (loopback always is)",
        kind: Kind::Csv(|c, registries| c.registry_insecure = registries),
    },
];

impl Kind {
    /// What the config file's value must be.
    pub(crate) fn file_type(&self) -> FileType {
        match self {
            Kind::Path { .. } | Kind::OwnFile(_) => FileType::Path,
            Kind::Text(_) => FileType::String,
            Kind::ConfigFile | Kind::Bool { .. } | Kind::Number { .. } | Kind::Repos(_) | Kind::Csv(_) => FileType::Any,
        }
    }
}

impl Setting {
    /// The setting of the config file's `key`.
    pub fn by_key(key: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.key == Some(key))
    }

    /// A number's bounds.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        match self.kind {
            Kind::Number { min, max, .. } => Some((min, max)),
            _ => None,
        }
    }

    /// The meaning as shown: with a number's bounds (Markdown).
    pub fn meaning_shown(&self) -> String {
        match self.bounds() {
            Some((min, max)) => format!("{}; {} to {}", self.meaning, shown_number(min), shown_number(max)),
            None => self.meaning.to_owned(),
        }
    }

    /// What this setting is given: the config file's `value` (already of the
    /// setting's [`FileType`]) as text, else its variable's. Reading the file's value
    /// may warn, or find a problem; both go into `config`.
    pub(crate) fn given(
        &self,
        value: Option<&toml::Value>,
        env: &dyn Fn(&str) -> Option<String>,
        config: &mut Config,
    ) -> Option<Given> {
        let from_file = match (self.key, value) {
            (Some(key), Some(value)) => self.file_text(key, value, config).map(|text| Given {
                source: Source::File(key),
                text,
            }),
            _ => None,
        };
        from_file.or_else(|| {
            env(self.env).map(|text| Given {
                source: Source::Env(self.env),
                text,
            })
        })
    }

    /// The text of the config file's `value` for `key`; none when it is not taken.
    fn file_text(&self, key: &'static str, value: &toml::Value, config: &mut Config) -> Option<String> {
        let source = Source::File(key);
        match (&self.kind, value) {
            (Kind::Repos(_), toml::Value::Array(items)) => {
                let mut tokens = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(token) => tokens.push(token),
                        None => config.warnings.push(format!(
                            "{source}: dropping {item} ({}): a repo is a string",
                            item.type_str()
                        )),
                    }
                }
                Some(tokens.join(","))
            }
            (Kind::Repos(_), other) if !other.is_str() => {
                config.warnings.push(format!(
                    "{source}: {other} is a {}, not a CSV string or an array of strings: ignored",
                    other.type_str()
                ));
                None
            }
            (Kind::OwnFile(_), toml::Value::String(path)) if path.trim().is_empty() => {
                config.problem = Some(format!(
                    "config: the config file's `{key}` is empty: name a file of deploy-guard's own, or remove the key"
                ));
                // An empty one is as if absent: the variable's stands.
                (!path.is_empty()).then(|| path.clone())
            }
            (_, value) => Some(text_of(value)),
        }
    }

    /// Apply what was `given` (and the flag of the same meaning, which wins over it).
    pub(crate) fn apply(&self, config: &mut Config, given: Option<Given>, overrides: &Overrides) {
        if let Kind::Path { field, flag } = self.kind {
            if let Some(path) = flag(overrides).cloned().or(given.map(|g| PathBuf::from(g.text))) {
                *field(config) = path;
            }
            return;
        }
        let Some(Given { source, text }) = given else {
            return;
        };
        match &self.kind {
            Kind::ConfigFile | Kind::Path { .. } => {}
            Kind::Bool { field, otherwise } => {
                let value = parse_bool(&text).unwrap_or_else(|| {
                    config.warnings.push(format!(
                        "{source}: {text:?} is not a boolean (true/false/1/0/yes/no/on/off): {otherwise}"
                    ));
                    false
                });
                *field(config) = value;
            }
            Kind::Number { min, max, set } => match parse_number(&text, *min, *max) {
                Some(n) => set(config, n),
                None => config.warnings.push(format!(
                    "{source}: {text:?} is not a whole number from {min} to {max}: keeping the default"
                )),
            },
            Kind::Repos(set) => set(config, &Given { source, text }),
            Kind::Csv(set) => set(config, split_csv(&text)),
            Kind::Text(set) => set(config, &text),
            Kind::OwnFile(field) => {
                // A blank variable is none; a blank key is a problem already, and kept.
                let blank_variable = matches!(source, Source::Env(_)) && text.trim().is_empty();
                *field(config) = (!blank_variable).then(|| PathBuf::from(text));
            }
        }
    }
}

/// A value of the config file as text: a string as itself, an array's items joined by
/// commas, anything else as TOML writes it.
fn text_of(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// A bound as shown: a large power of ten as `10^n`.
fn shown_number(n: u64) -> String {
    let (mut rest, mut power) = (n, 0);
    while rest >= 10 && rest % 10 == 0 {
        rest /= 10;
        power += 1;
    }
    if rest == 1 && power >= 7 {
        format!("10^{power}")
    } else {
        n.to_string()
    }
}

impl Shown {
    /// As Markdown.
    fn markdown(self) -> String {
        match self {
            Shown::Value(value) => format!("`{value}`"),
            Shown::Words(words) => words.to_owned(),
        }
    }
}

/// The README's configuration table (Markdown), one row per setting.
pub fn markdown_table() -> String {
    let mut table = String::from("| variable | config key | default | meaning |\n|---|---|---|---|\n");
    for setting in SETTINGS {
        let key = setting.key.map(|k| format!("`{k}`")).unwrap_or_default();
        let cells = [
            format!("`{}`", setting.env),
            key,
            setting.default.markdown(),
            setting.meaning_shown(),
        ];
        // An empty cell is one space wide, as a person writes it.
        let cells: Vec<String> = cells
            .iter()
            .map(|cell| {
                if cell.is_empty() {
                    " ".to_owned()
                } else {
                    format!(" {cell} ")
                }
            })
            .collect();
        let _ = writeln!(table, "|{}|", cells.join("|"));
    }
    table
}

/// The settings as `deploy-guard --help` lists them, after the options: each variable
/// with its key and default, then its meaning, wrapped.
pub fn help() -> String {
    let plain = |markdown: &str| markdown.replace('`', "");
    let mut help = String::from(
        "Settings: each from its environment variable, then from its key in the TOML file named by\n\
         DEPLOY_GUARD_CONFIG, then from the flag of the same meaning (--db, --policy), each\n\
         overriding the one before.\n",
    );
    for setting in SETTINGS {
        let default = match setting.default {
            Shown::Value(value) | Shown::Words(value) => plain(value),
        };
        let _ = match setting.key {
            Some(key) => write!(help, "\n  {}  (config key: {key}; default: {default})", setting.env),
            None => write!(help, "\n  {}  (default: {default})", setting.env),
        };
        for line in wrap(&plain(&setting.meaning_shown()), 74) {
            let _ = write!(help, "\n      {line}");
        }
    }
    help.push('\n');
    help
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word
/// stands alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn the_readme_shows_the_settings_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("the README");
        let table = markdown_table();
        let header = table.lines().next().expect("a header");
        let shown: String = readme
            .lines()
            .skip_while(|line| *line != header)
            .take_while(|line| line.starts_with('|'))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            shown == table,
            "README.md's configuration table is not the settings' (host/src/config/settings.rs); \
             put this in its place:\n\n{table}"
        );
    }

    #[test]
    fn variables_and_keys_are_each_declared_once() {
        let mut variables = HashSet::new();
        let mut keys = HashSet::new();
        for setting in SETTINGS {
            assert!(variables.insert(setting.env), "{} twice", setting.env);
            if let Some(key) = setting.key {
                assert!(keys.insert(key), "{key} twice");
                assert_eq!(Setting::by_key(key).map(|s| s.env), Some(setting.env));
            }
            assert_eq!(
                setting.key.is_none(),
                matches!(setting.kind, Kind::ConfigFile),
                "{}",
                setting.env
            );
            assert!(
                !setting.meaning.contains('|') && !setting.meaning.contains('\n'),
                "{}: one line, one cell",
                setting.env
            );
        }
        assert_eq!(
            SETTINGS.iter().filter(|s| matches!(s.kind, Kind::ConfigFile)).count(),
            1
        );
    }

    /// A default shown as a value is the default: given as such, it changes nothing.
    #[test]
    fn every_default_shown_is_the_default() {
        let loaded = |vars: &[(&str, &str)]| {
            let vars: HashMap<&str, &str> = vars.iter().copied().collect();
            Config::load_from(|name| vars.get(name).map(|v| (*v).to_owned()), &Overrides::default())
        };
        let mut values = 0;
        for setting in SETTINGS {
            if let Shown::Value(value) = setting.default {
                assert_eq!(loaded(&[(setting.env, value)]), loaded(&[]), "{}={value}", setting.env);
                values += 1;
            }
        }
        assert!(values >= 10, "{values}");
        // The words: nothing, or for the cache, the user's cache directory.
        let config = loaded(&[("HOME", "/h")]);
        assert_eq!(config.cache, Some(PathBuf::from("/h/.cache/deploy-guard")));
        assert_eq!(
            (config.scope_repos.len(), config.ledger, config.metrics_addr),
            (0, None, None)
        );
        assert!(config.trusted_keys.is_empty() && config.registry_insecure.is_empty() && config.file.is_none());
    }

    #[test]
    fn help_lists_every_setting_with_its_key_default_and_bounds() {
        let help = help();
        for setting in SETTINGS {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{}  (", setting.env)))
                .unwrap_or_else(|| panic!("{} missing:\n{help}", setting.env));
            if let Some(key) = setting.key {
                assert!(line.contains(&format!("config key: {key};")), "{line}");
            }
            if let Shown::Value(value) = setting.default {
                assert!(line.ends_with(&format!("default: {value})")), "{line}");
            }
        }
        assert!(help.contains("1 to 60000") && help.contains("10000 to 10^10"), "{help}");
        assert!(!help.contains('`'), "plain text: {help}");
        for line in help.lines() {
            assert!(line.chars().count() <= 100, "{line:?}");
        }
    }

    #[test]
    fn bounds_are_shown_plainly_but_for_large_powers_of_ten() {
        let shown: Vec<String> = [
            0,
            100,
            60_000,
            86_400_000,
            1_000_000,
            10_000_000,
            1_000_000_000,
            10_000_000_000,
        ]
        .into_iter()
        .map(shown_number)
        .collect();
        assert_eq!(
            shown,
            ["0", "100", "60000", "86400000", "1000000", "10^7", "10^9", "10^10"]
        );
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_keeps_a_long_word_whole() {
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("averyveryverylongword x", 6), ["averyveryverylongword", "x"]);
        assert!(wrap("", 6).is_empty());
    }
}
