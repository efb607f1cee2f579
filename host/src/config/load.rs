//! The loader: for every setting of [`SETTINGS`], the environment, then the config
//! file with the overrides' settings laid over it, then the flags, each overriding the
//! one before.

use crate::config::settings::{CONFIG_FILE, FileType, SETTINGS, Setting};
use crate::config::{Config, Environment, Overrides, default_cache_dir};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

impl Config {
    /// Load from the process environment, the config file it names, and `overrides`.
    pub fn load(overrides: &Overrides) -> Config {
        Config::load_from(|name| std::env::var(name).ok(), overrides)
    }

    /// Load with `env` standing for the environment (tests, embedding).
    pub fn load_from(env: impl Fn(&str) -> Option<String>, overrides: &Overrides) -> Config {
        // Every variable a load may ask for is read now, whether this load asks for it or
        // not (a setting the file gives does not look at its variable): a reload with
        // this environment must find the variable of a setting the file no longer gives.
        // Any other name asked is recorded as it is asked.
        let asked = std::cell::RefCell::new(
            std::iter::once(CONFIG_FILE.env)
                .chain(SETTINGS.iter().map(|setting| setting.env))
                .chain(["XDG_CACHE_HOME", "HOME"])
                .map(|name| (name.to_owned(), env(name)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
        let env = |name: &str| {
            if let Some(value) = asked.borrow().get(name) {
                return value.clone();
            }
            let value = env(name);
            asked.borrow_mut().insert(name.to_owned(), value.clone());
            value
        };
        let file = overrides
            .config_file
            .clone()
            .or_else(|| env(CONFIG_FILE.env).filter(|p| !p.trim().is_empty()).map(PathBuf::from));
        let (values, problem) = file_values(file.as_deref(), &overrides.settings);
        let mut config = Config {
            cache: default_cache_dir(env),
            file,
            problem,
            ..Config::default()
        };
        // What every setting is given first (reading the file's lists may warn), then
        // each applied, so that warnings come in this order.
        let given: Vec<_> = SETTINGS
            .iter()
            .map(|setting| setting.given(setting.key.and_then(|k| values.get(k)), &env, &mut config))
            .collect();
        for (setting, given) in SETTINGS.iter().zip(given) {
            setting.apply(&mut config, given, overrides);
        }
        // The keys read once, here; a trusted key that cannot be read never means
        // "trust everything": every decision fails safe naming it.
        let keys = std::mem::take(&mut config.trusted_keys);
        config.environment = Environment(std::sync::Arc::new(asked.into_inner()));
        config.with_trusted_keys(keys)
    }
}

/// The config file's values with the overrides' settings laid over them, each checked
/// against its setting; and the problem, if the file cannot be read or parsed or a key
/// or a value is wrong. A bad setting is named as a setting, and the file applies
/// without the settings; a bad file applies nothing (a half-applied configuration
/// could decide with a scope the operator did not mean).
fn file_values(path: Option<&Path>, settings: &toml::Table) -> (HashMap<&'static str, toml::Value>, Option<String>) {
    let mut problem = None;
    let mut table = match path.map(read_file_config) {
        None => toml::Table::new(),
        Some(Ok(table)) => table,
        Some(Err(e)) => {
            problem = Some(e);
            toml::Table::new()
        }
    };
    match Checked::deserialize(settings.clone()) {
        Ok(_) => table.extend(settings.clone()),
        Err(e) => {
            problem.get_or_insert(format!("config: setting: {}", one_line(&e.to_string())));
        }
    }
    match Checked::deserialize(table) {
        Ok(Checked(values)) => (values, problem),
        Err(e) => {
            problem.get_or_insert(format!(
                "config: cannot parse the config file {}: {}",
                path.unwrap_or(Path::new("")).display(),
                one_line(&e.to_string())
            ));
            (HashMap::new(), problem)
        }
    }
}

/// The file's keys, parsed as TOML but not yet checked against the settings.
fn read_file_config(path: &Path) -> Result<toml::Table, String> {
    let cannot_read =
        |e: &dyn std::fmt::Display| format!("config: cannot read the config file {}: {e}", path.display());
    let bytes =
        crate::files::read::read_bounded(path, crate::files::read::MAX_CONFIG_BYTES).map_err(|e| cannot_read(&e))?;
    let text = String::from_utf8(bytes).map_err(|e| cannot_read(&e))?;
    toml::from_str(&text).map_err(|e| {
        format!(
            "config: cannot parse the config file {}: {}",
            path.display(),
            one_line(&e.to_string())
        )
    })
}

fn one_line(message: &str) -> String {
    message.lines().collect::<Vec<_>>().join(" ")
}

/// The keys of a config file (or of the settings), each value of its setting's
/// [`FileType`]; deserialized as a struct of those fields would be, so that serde's
/// words name an unknown key (with every key) or a value of the wrong type (with its
/// key).
#[derive(Debug)]
struct Checked(HashMap<&'static str, toml::Value>);

/// Every key, in the order of [`SETTINGS`].
static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| SETTINGS.iter().filter_map(|s| s.key).collect());

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_struct("Config", &KEYS, CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table of settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut values = HashMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(setting) = Setting::by_key(&key) else {
                return Err(de::Error::unknown_field(&key, &KEYS));
            };
            // A setting found by its key has one.
            let key = setting.key.unwrap_or_default();
            let value = match setting.kind.file_type() {
                FileType::Path => toml::Value::String(map.next_value::<PathBuf>()?.to_string_lossy().into_owned()),
                FileType::String => toml::Value::String(map.next_value()?),
                FileType::Any => map.next_value()?,
            };
            values.insert(key, value);
        }
        Ok(Checked(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, LogFormat};
    use std::collections::HashMap;
    use std::time::Duration;

    fn load(vars: &[(&str, &str)]) -> Config {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::load_from(|name| vars.get(name).cloned(), &Overrides::default())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = load(&[]);
        assert_eq!(c.db, PathBuf::from("orchestrator.db"));
        assert_eq!(c.policy, PathBuf::from("policies/deploy-status-guard.wasm"));
        assert!(c.enabled);
        assert!(c.scope_repos.is_empty());
        assert_eq!(c.self_hosting_repos, ["orchestrator"]);
        assert_eq!(c.limits, Limits::DEFAULT);
        assert!(c.warnings.is_empty() && c.problem.is_none());
        assert_eq!(c.cache, None, "no HOME, no XDG_CACHE_HOME, no DEPLOY_GUARD_CACHE");
    }

    #[test]
    fn the_cache_defaults_to_the_user_cache_dir_and_can_be_turned_off() {
        assert_eq!(
            load(&[("HOME", "/h")]).cache,
            Some(PathBuf::from("/h/.cache/deploy-guard"))
        );
        assert_eq!(
            load(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).cache,
            Some(PathBuf::from("/x/deploy-guard"))
        );
        assert_eq!(
            load(&[("HOME", "/h"), ("DEPLOY_GUARD_CACHE", "/c")]).cache,
            Some(PathBuf::from("/c"))
        );
        assert_eq!(load(&[("HOME", "/h"), ("DEPLOY_GUARD_CACHE", "OFF")]).cache, None);
    }

    #[test]
    fn booleans_take_every_spelling_and_anything_else_disables() {
        for (text, expected) in [
            ("TRUE", true),
            (" yes ", true),
            ("On", true),
            ("1", true),
            ("off", false),
            ("No", false),
            ("0", false),
        ] {
            assert_eq!(
                load(&[("DEPLOY_STATUS_GUARD_ENABLED", text)]).enabled,
                expected,
                "{text}"
            );
        }
        let c = load(&[("DEPLOY_STATUS_GUARD_ENABLED", "maybe")]);
        assert!(!c.enabled);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("\"maybe\" is not a boolean"), "{:?}", c.warnings);
    }

    #[test]
    fn the_scope_is_sanitised_with_one_warning_per_dropped_token() {
        let c = load(&[("DEPLOY_STATUS_GUARD_REPOS", " svc-a , bad repo,ok.repo_1,,svc/x, svc-a")]);
        assert_eq!(c.scope_repos, ["svc-a", "ok.repo_1"]);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("\"bad repo\""));
        assert!(c.warnings[1].contains("\"svc/x\""));
    }

    #[test]
    fn a_scope_that_sanitises_to_nothing_means_self_hosting_only() {
        let c = load(&[("DEPLOY_STATUS_GUARD_REPOS", "a b, c/d")]);
        assert!(c.scope_repos.is_empty());
        assert_eq!(c.warnings.len(), 2);
    }

    #[test]
    fn unusable_limits_keep_their_defaults_with_a_warning() {
        for bad in ["0", "abc", "-5", "99999999999999999999", ""] {
            let c = load(&[
                ("DEPLOY_GUARD_TIMEOUT_MS", bad),
                ("DEPLOY_GUARD_MEMORY_MIB", bad),
                ("DEPLOY_GUARD_FUEL", bad),
            ]);
            assert_eq!(c.limits, Limits::DEFAULT, "{bad}");
            assert_eq!(c.warnings.len(), 3, "{bad}: {:?}", c.warnings);
        }
        let c = load(&[
            ("DEPLOY_GUARD_TIMEOUT_MS", "250"),
            ("DEPLOY_GUARD_MEMORY_MIB", "32"),
            ("DEPLOY_GUARD_FUEL", "1_000_000"),
        ]);
        assert_eq!(c.limits.timeout, Duration::from_millis(250));
        assert_eq!(c.limits.memory_bytes, 32 << 20);
        assert_eq!(c.limits.fuel, 1_000_000);
    }

    #[test]
    fn the_file_overrides_the_environment_and_flags_override_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("guard.toml");
        std::fs::write(
            &file,
            "db = \"from-file.db\"\nenabled = false\nrepos = [\"svc-a\", \"bad token\"]\ntimeout_ms = 300\n",
        )
        .expect("write");
        let vars: HashMap<String, String> = [
            ("DEPLOY_GUARD_CONFIG", file.to_str().expect("utf-8")),
            ("DEPLOY_GUARD_DB", "from-env.db"),
            ("DEPLOY_GUARD_POLICY", "from-env.wasm"),
            ("DEPLOY_STATUS_GUARD_ENABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
        let c = Config::load_from(|n| vars.get(n).cloned(), &Overrides::default());
        assert_eq!(c.db, PathBuf::from("from-file.db"));
        assert_eq!(c.policy, PathBuf::from("from-env.wasm"));
        assert!(!c.enabled);
        assert_eq!(c.scope_repos, ["svc-a"]);
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.limits.timeout, Duration::from_millis(300));
        let flags = Overrides {
            db: Some("flag.db".into()),
            policy: Some("flag.wasm".into()),
            ..Overrides::default()
        };
        let c = Config::load_from(|n| vars.get(n).cloned(), &flags);
        assert_eq!((c.db, c.policy), (PathBuf::from("flag.db"), PathBuf::from("flag.wasm")));
    }

    #[test]
    fn a_load_keeps_the_environment_it_read_so_a_reload_reads_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("guard.toml");
        let vars: HashMap<&str, String> = [
            ("DEPLOY_GUARD_CONFIG", file.display().to_string()),
            ("DEPLOY_GUARD_DB", "from-env.db".to_owned()),
        ]
        .into_iter()
        .collect();
        // The file gives `db`: its variable is recorded all the same, for a reload
        // after which the file no longer gives it.
        std::fs::write(&file, "enabled = false\ndb = \"from-file.db\"\n").expect("write");
        let c = Config::load_from(|n| vars.get(n).cloned(), &Overrides::default());
        assert_eq!(c.db, PathBuf::from("from-file.db"));
        assert_eq!(c.environment.var("DEPLOY_GUARD_DB").as_deref(), Some("from-env.db"));
        assert_eq!(c.environment.var("DEPLOY_GUARD_POLICY"), None);
        // Loaded again from what it recorded, with the file changed: the same
        // environment, the file's new values (`db` from the environment again).
        std::fs::write(&file, "enabled = true\n").expect("rewrite");
        let again = Config::load_from(|n| c.environment.var(n), &Overrides::default());
        assert_eq!(
            (again.db.clone(), again.file.clone(), again.enabled),
            (PathBuf::from("from-env.db"), c.file.clone(), true)
        );
        assert_eq!(again.environment.var("DEPLOY_GUARD_DB").as_deref(), Some("from-env.db"));
    }

    #[test]
    fn settings_override_the_file_and_the_environment_and_a_bad_one_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("guard.toml");
        std::fs::write(&file, "enabled = false\nrepos = \"svc-a\"\ntimeout_ms = 300\n").expect("write");
        let env = |n: &str| (n == "DEPLOY_GUARD_FUEL").then(|| "20000".to_owned());
        let mut settings = toml::Table::new();
        settings.insert("enabled".into(), toml::Value::Boolean(true));
        settings.insert("fuel".into(), toml::Value::Integer(50_000));
        let overrides = Overrides {
            config_file: Some(file.clone()),
            settings,
            ..Overrides::default()
        };
        let c = Config::load_from(env, &overrides);
        assert!(c.problem.is_none(), "{:?}", c.problem);
        assert_eq!(
            c.file.as_deref(),
            Some(file.as_path()),
            "the given file, not the environment's"
        );
        assert!(c.enabled, "the setting wins over the file");
        assert_eq!(c.scope_repos, ["svc-a"], "the file still gives what no setting gives");
        assert_eq!(c.limits.timeout, Duration::from_millis(300));
        assert_eq!(c.limits.fuel, 50_000, "the setting wins over the environment");

        for (key, value) in [
            ("no_such_key", toml::Value::Boolean(true)),
            ("log", toml::Value::Integer(3)),
        ] {
            let mut settings = toml::Table::new();
            settings.insert(key.into(), value);
            let c = Config::load_from(
                env,
                &Overrides {
                    settings,
                    ..Overrides::default()
                },
            );
            let problem = c.problem.unwrap_or_default();
            assert!(problem.starts_with("config: setting:"), "{key}: {problem}");
        }
    }

    #[test]
    fn a_config_file_that_does_not_parse_is_a_problem_not_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("guard.toml");
        std::fs::write(&file, "enabled = = true").expect("write");
        let path = file.to_str().expect("utf-8").to_owned();
        let c = Config::load_from(
            |n| (n == "DEPLOY_GUARD_CONFIG").then(|| path.clone()),
            &Overrides::default(),
        );
        assert!(
            c.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("config: cannot parse")),
            "{:?}",
            c.problem
        );
        let c = Config::load_from(
            |n| (n == "DEPLOY_GUARD_CONFIG").then(|| "/nonexistent/x.toml".into()),
            &Overrides::default(),
        );
        assert!(
            c.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("config: cannot read")),
            "{:?}",
            c.problem
        );
    }

    // -----------------------------------------------------------------------------
    // Every setting, each of its edge cases, with the exact words of its warnings and
    // problems: what issue 20's rewrite must keep.
    // -----------------------------------------------------------------------------

    /// A load from `vars`, the config file `file` (written to a temporary directory and
    /// named by `DEPLOY_GUARD_CONFIG`) and the settings `settings` (TOML text); the
    /// file's path reads `<file>` in the problem.
    fn load_layers(vars: &[(&str, &str)], file: Option<&str>, settings: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("guard.toml");
        let mut vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        if let Some(text) = file {
            std::fs::write(&path, text).expect("write");
            vars.insert("DEPLOY_GUARD_CONFIG".into(), path.display().to_string());
        }
        let overrides = Overrides {
            settings: toml::from_str(settings).expect("settings are TOML"),
            ..Overrides::default()
        };
        let mut c = Config::load_from(|name| vars.get(name).cloned(), &overrides);
        c.problem = c.problem.map(|p| p.replace(&path.display().to_string(), "<file>"));
        c.file = None;
        c
    }

    fn from_file(text: &str) -> Config {
        load_layers(&[], Some(text), "")
    }

    #[test]
    fn every_setting_is_read_from_the_environment() {
        let c = load(&[
            ("DEPLOY_GUARD_DB", "d.db"),
            ("DEPLOY_GUARD_POLICY", "p.wasm"),
            ("DEPLOY_STATUS_GUARD_ENABLED", "off"),
            ("DEPLOY_STATUS_GUARD_REPOS", "svc-a,svc-b"),
            ("DEPLOY_GUARD_SELF_HOSTING_REPOS", " x , y ,, "),
            ("DEPLOY_GUARD_LOG", " JSON "),
            ("DEPLOY_GUARD_TIMEOUT_MS", "250"),
            ("DEPLOY_GUARD_FUEL", " 1_000_000 "),
            ("DEPLOY_GUARD_MEMORY_MIB", "+32"),
            ("DEPLOY_GUARD_BUSY_TIMEOUT_MS", "0"),
            ("DEPLOY_GUARD_CACHE", " /c "),
            ("DEPLOY_GUARD_LEDGER", "/l.db"),
            ("DEPLOY_GUARD_LEDGER_MAX_ROWS", "1000"),
            ("DEPLOY_GUARD_METRICS_ADDR", "9464"),
            ("DEPLOY_GUARD_TRUSTED_KEYS", " , "),
            ("DEPLOY_GUARD_POLL_MS", "86_400_000"),
            ("DEPLOY_GUARD_REGISTRY_INSECURE", "h:1, h:2,"),
        ]);
        let expected = Config {
            db: "d.db".into(),
            policy: "p.wasm".into(),
            enabled: false,
            scope_repos: vec!["svc-a".into(), "svc-b".into()],
            self_hosting_repos: vec!["x".into(), "y".into()],
            log: LogFormat::Json,
            limits: Limits {
                timeout: Duration::from_millis(250),
                fuel: 1_000_000,
                memory_bytes: 32 << 20,
                ..Limits::DEFAULT
            },
            busy_timeout: Duration::ZERO,
            cache: Some(" /c ".into()),
            ledger: Some("/l.db".into()),
            ledger_max_rows: 1000,
            metrics_addr: Some("9464".into()),
            trusted_keys: Vec::new(),
            poll: Duration::from_millis(86_400_000),
            registry_insecure: vec!["h:1".into(), "h:2".into()],
            ..Config::default()
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn every_setting_is_read_from_the_file_in_its_natural_type_and_as_a_string() {
        let natural = from_file(
            "db = \"d.db\"\npolicy = \"p.wasm\"\nenabled = false\nrepos = [\"svc-a\", \"svc-b\"]\n\
             self_hosting_repos = [\"x\"]\nlog = \"json\"\ntimeout_ms = 250\nfuel = 1_000_000\n\
             memory_mib = 32\nbusy_timeout_ms = 0\ncache = \"/c\"\nledger = \"/l.db\"\n\
             ledger_max_rows = 1000\nmetrics_addr = \"9464\"\ntrusted_keys = []\npoll_ms = 100\n\
             registry_insecure = [\"h:1\", \"h:2\"]\n",
        );
        let as_strings = from_file(
            "db = \"d.db\"\npolicy = \"p.wasm\"\nenabled = \"no\"\nrepos = \"svc-a, svc-b\"\n\
             self_hosting_repos = \"x\"\nlog = \"JSON\"\ntimeout_ms = \"250\"\nfuel = \"1_000_000\"\n\
             memory_mib = \"32\"\nbusy_timeout_ms = \"0\"\ncache = \"/c\"\nledger = \"/l.db\"\n\
             ledger_max_rows = \"1_000\"\nmetrics_addr = \"9464\"\ntrusted_keys = \"\"\npoll_ms = \"100\"\n\
             registry_insecure = \"h:1,h:2\"\n",
        );
        let expected = Config {
            db: "d.db".into(),
            policy: "p.wasm".into(),
            enabled: false,
            scope_repos: vec!["svc-a".into(), "svc-b".into()],
            self_hosting_repos: vec!["x".into()],
            log: LogFormat::Json,
            limits: Limits {
                timeout: Duration::from_millis(250),
                fuel: 1_000_000,
                memory_bytes: 32 << 20,
                ..Limits::DEFAULT
            },
            busy_timeout: Duration::ZERO,
            cache: Some("/c".into()),
            ledger: Some("/l.db".into()),
            ledger_max_rows: 1000,
            metrics_addr: Some("9464".into()),
            poll: Duration::from_millis(100),
            registry_insecure: vec!["h:1".into(), "h:2".into()],
            ..Config::default()
        };
        assert_eq!(natural, expected);
        assert_eq!(as_strings, expected);
    }

    #[test]
    fn the_file_overrides_the_environment_setting_by_setting() {
        let env = [
            ("DEPLOY_GUARD_DB", "env.db"),
            ("DEPLOY_GUARD_POLICY", "env.wasm"),
            ("DEPLOY_STATUS_GUARD_ENABLED", "true"),
            ("DEPLOY_STATUS_GUARD_REPOS", "env-repo"),
            ("DEPLOY_GUARD_SELF_HOSTING_REPOS", "env-self"),
            ("DEPLOY_GUARD_LOG", "text"),
            ("DEPLOY_GUARD_TIMEOUT_MS", "2"),
            ("DEPLOY_GUARD_FUEL", "20000"),
            ("DEPLOY_GUARD_MEMORY_MIB", "2"),
            ("DEPLOY_GUARD_BUSY_TIMEOUT_MS", "2"),
            ("DEPLOY_GUARD_CACHE", "/env-cache"),
            ("DEPLOY_GUARD_LEDGER", "/env.db"),
            ("DEPLOY_GUARD_LEDGER_MAX_ROWS", "2000"),
            ("DEPLOY_GUARD_METRICS_ADDR", "2"),
            ("DEPLOY_GUARD_POLL_MS", "200"),
            ("DEPLOY_GUARD_REGISTRY_INSECURE", "env:2"),
        ];
        let file = "db = \"f.db\"\npolicy = \"f.wasm\"\nenabled = false\nrepos = \"f-repo\"\n\
                    self_hosting_repos = \"f-self\"\nlog = \"json\"\ntimeout_ms = 3\nfuel = 30000\n\
                    memory_mib = 3\nbusy_timeout_ms = 3\ncache = \"/f-cache\"\nledger = \"/f.db\"\n\
                    ledger_max_rows = 3000\nmetrics_addr = \"3\"\npoll_ms = 300\n\
                    registry_insecure = \"f:3\"\n";
        let c = load_layers(&env, Some(file), "");
        let expected = Config {
            db: "f.db".into(),
            policy: "f.wasm".into(),
            enabled: false,
            scope_repos: vec!["f-repo".into()],
            self_hosting_repos: vec!["f-self".into()],
            log: LogFormat::Json,
            limits: Limits {
                timeout: Duration::from_millis(3),
                fuel: 30_000,
                memory_bytes: 3 << 20,
                ..Limits::DEFAULT
            },
            busy_timeout: Duration::from_millis(3),
            cache: Some("/f-cache".into()),
            ledger: Some("/f.db".into()),
            ledger_max_rows: 3000,
            metrics_addr: Some("3".into()),
            poll: Duration::from_millis(300),
            registry_insecure: vec!["f:3".into()],
            ..Config::default()
        };
        assert_eq!(c, expected);
        // And with an empty file, the environment's values.
        let c = load_layers(&env, Some(""), "");
        assert_eq!(
            (c.db, c.ledger, c.ledger_max_rows, c.poll, c.registry_insecure),
            (
                PathBuf::from("env.db"),
                Some(PathBuf::from("/env.db")),
                2000,
                Duration::from_millis(200),
                vec!["env:2".to_owned()]
            )
        );
    }

    #[test]
    fn every_number_takes_its_bounds_and_refuses_one_beyond_naming_its_source() {
        for (variable, key, low, high) in [
            ("DEPLOY_GUARD_TIMEOUT_MS", "timeout_ms", 1_u64, 60_000_u64),
            ("DEPLOY_GUARD_FUEL", "fuel", 10_000, 10_000_000_000),
            ("DEPLOY_GUARD_MEMORY_MIB", "memory_mib", 1, 1024),
            ("DEPLOY_GUARD_BUSY_TIMEOUT_MS", "busy_timeout_ms", 0, 60_000),
            ("DEPLOY_GUARD_LEDGER_MAX_ROWS", "ledger_max_rows", 1_000, 1_000_000_000),
            ("DEPLOY_GUARD_POLL_MS", "poll_ms", 100, 86_400_000),
        ] {
            for n in [low, high] {
                let c = load(&[(variable, &n.to_string())]);
                assert!(c.warnings.is_empty(), "{variable}={n}: {:?}", c.warnings);
                assert_ne!(c, load(&[]), "{variable}={n} is applied");
            }
            let beyond = [low.checked_sub(1).map(|n| n.to_string()), Some((high + 1).to_string())];
            for text in beyond.into_iter().flatten() {
                let c = load(&[(variable, &text)]);
                assert_eq!(
                    c.warnings,
                    [format!(
                        "{variable}: {text:?} is not a whole number from {low} to {high}: keeping the default"
                    )]
                );
                assert_eq!(
                    Config {
                        warnings: Vec::new(),
                        ..c
                    },
                    load(&[])
                );
            }
            let c = from_file(&format!("{key} = 1.5\n"));
            assert_eq!(
                c.warnings,
                [format!(
                    "config file key `{key}`: \"1.5\" is not a whole number from {low} to {high}: keeping the default"
                )]
            );
        }
        // The text as given, untrimmed, in the warning; an array's items joined.
        let c = load(&[("DEPLOY_GUARD_TIMEOUT_MS", " 1 0 ")]);
        assert_eq!(
            c.warnings,
            ["DEPLOY_GUARD_TIMEOUT_MS: \" 1 0 \" is not a whole number from 1 to 60000: keeping the default"]
        );
        assert_eq!(from_file("timeout_ms = [5]\n").limits.timeout, Duration::from_millis(5));
        let c = from_file("timeout_ms = true\nfuel = [1, 2]\n");
        assert_eq!(
            c.warnings,
            [
                "config file key `timeout_ms`: \"true\" is not a whole number from 1 to 60000: keeping the default",
                "config file key `fuel`: \"1,2\" is not a whole number from 10000 to 10000000000: keeping the default",
            ]
        );
        assert_eq!(
            load(&[("DEPLOY_GUARD_TIMEOUT_MS", "1__0_")]).limits.timeout,
            Duration::from_millis(10)
        );
    }

    #[test]
    fn booleans_in_the_file_are_read_as_their_text() {
        assert!(from_file("enabled = \"ON\"\n").enabled);
        assert!(from_file("enabled = 1\n").enabled);
        assert!(from_file("enabled = [\"yes\"]\n").enabled, "an array's items, joined");
        let c = from_file("enabled = 1.0\n");
        assert!(!c.enabled);
        assert_eq!(
            c.warnings,
            [
                "config file key `enabled`: \"1.0\" is not a boolean (true/false/1/0/yes/no/on/off): \
              the guard is disabled, every verdict is ALLOW"
            ]
        );
        let c = load(&[("DEPLOY_STATUS_GUARD_ENABLED", "")]);
        assert!(!c.enabled, "an empty variable is not a boolean");
        assert_eq!(
            c.warnings,
            [
                "DEPLOY_STATUS_GUARD_ENABLED: \"\" is not a boolean (true/false/1/0/yes/no/on/off): \
              the guard is disabled, every verdict is ALLOW"
            ]
        );
    }

    #[test]
    fn lists_of_repos_are_a_csv_or_an_array_of_strings_and_anything_else_is_ignored() {
        let env = [
            ("DEPLOY_STATUS_GUARD_REPOS", "env-repo"),
            ("DEPLOY_GUARD_SELF_HOSTING_REPOS", "env-self"),
        ];
        // A number, a table: warned about, and the environment's value stands.
        let c = load_layers(&env, Some("repos = 5\nself_hosting_repos = { a = 1 }\n"), "");
        assert_eq!(c.scope_repos, ["env-repo"]);
        assert_eq!(c.self_hosting_repos, ["env-self"]);
        assert_eq!(
            c.warnings,
            [
                "config file key `repos`: 5 is a integer, not a CSV string or an array of strings: ignored",
                "config file key `self_hosting_repos`: { a = 1 } is a table, not a CSV string or an array of strings: ignored",
            ]
        );
        assert!(c.problem.is_none());
        // An array's strings are tokens; anything else in it is dropped, one warning each.
        let c = from_file("repos = [\"svc-a\", 1, true, \"bad token\"]\nself_hosting_repos = [\" x \", 2.5]\n");
        assert_eq!(c.scope_repos, ["svc-a"]);
        assert_eq!(c.self_hosting_repos, ["x"]);
        assert_eq!(
            c.warnings,
            [
                "config file key `repos`: dropping 1 (integer): a repo is a string",
                "config file key `repos`: dropping true (boolean): a repo is a string",
                "config file key `self_hosting_repos`: dropping 2.5 (float): a repo is a string",
                "config file key `repos`: dropping invalid repo token \"bad token\"",
            ]
        );
        // Empty: no repo at all (the scope: self-hosting only; no self-hosting repo).
        let c = load_layers(&env, Some("repos = []\nself_hosting_repos = \"\"\n"), "");
        assert!(c.scope_repos.is_empty() && c.self_hosting_repos.is_empty(), "{c:?}");
        assert!(c.warnings.is_empty());
        // The other lists take any value's text.
        let c = from_file("registry_insecure = [\"h:1\", 5]\n");
        assert_eq!(c.registry_insecure, ["h:1", "5"]);
    }

    #[test]
    fn warnings_come_in_the_order_the_settings_are_read() {
        let c = from_file(
            "enabled = \"maybe\"\nrepos = [\"a\", 1, \"b c\"]\nself_hosting_repos = 5\nlog = \"yaml\"\n\
             timeout_ms = 0\npoll_ms = 1\n",
        );
        assert_eq!(
            c.warnings,
            [
                "config file key `repos`: dropping 1 (integer): a repo is a string",
                "config file key `self_hosting_repos`: 5 is a integer, not a CSV string or an array of strings: ignored",
                "config file key `enabled`: \"maybe\" is not a boolean (true/false/1/0/yes/no/on/off): \
                 the guard is disabled, every verdict is ALLOW",
                "config file key `repos`: dropping invalid repo token \"b c\"",
                "log format \"yaml\" is neither text nor json: using text",
                "config file key `timeout_ms`: \"0\" is not a whole number from 1 to 60000: keeping the default",
                "config file key `poll_ms`: \"1\" is not a whole number from 100 to 86400000: keeping the default",
            ]
        );
    }

    #[test]
    fn the_log_format_is_text_or_json_in_any_case() {
        assert_eq!(load(&[("DEPLOY_GUARD_LOG", " Json ")]).log, LogFormat::Json);
        assert_eq!(from_file("log = \"TEXT\"\n").log, LogFormat::Text);
        let c = load_layers(&[("DEPLOY_GUARD_LOG", "json")], Some("log = \" YAML \"\n"), "");
        assert_eq!(
            c.log,
            LogFormat::Text,
            "the file's unknown format is not the environment's"
        );
        assert_eq!(c.warnings, ["log format \"yaml\" is neither text nor json: using text"]);
    }

    #[test]
    fn the_cache_is_off_by_any_of_its_words_and_a_blank_file_value_turns_it_off() {
        for off in ["off", " OFF ", "none", "False", "0", "", "  "] {
            assert_eq!(
                load(&[("HOME", "/h"), ("DEPLOY_GUARD_CACHE", off)]).cache,
                None,
                "{off:?}"
            );
            assert_eq!(
                load_layers(&[("HOME", "/h")], Some(&format!("cache = {off:?}\n")), "").cache,
                None,
                "{off:?}"
            );
        }
        let c = load_layers(
            &[("HOME", "/h"), ("DEPLOY_GUARD_CACHE", "/env")],
            Some("cache = \"\"\n"),
            "",
        );
        assert_eq!(c.cache, None, "an empty key in the file is off, not the environment's");
        assert_eq!(
            load(&[("HOME", "/h"), ("XDG_CACHE_HOME", "")]).cache,
            Some(PathBuf::from("/h/.cache/deploy-guard")),
            "an empty XDG_CACHE_HOME is unset"
        );
        assert_eq!(load(&[("HOME", "")]).cache, None);
        assert_eq!(
            from_file("cache = \"relative/dir\"\n").cache,
            Some(PathBuf::from("relative/dir"))
        );
    }

    #[test]
    fn an_empty_ledger_in_the_file_is_a_problem_and_a_blank_variable_is_no_ledger() {
        const EMPTY: &str =
            "config: the config file's `ledger` is empty: name a file of deploy-guard's own, or remove the key";
        let c = load_layers(&[("DEPLOY_GUARD_LEDGER", "/env.db")], Some("ledger = \"\"\n"), "");
        assert_eq!(c.problem.as_deref(), Some(EMPTY));
        assert_eq!(c.ledger, Some(PathBuf::from("/env.db")));
        let c = load_layers(&[("DEPLOY_GUARD_LEDGER", "/env.db")], Some("ledger = \"  \"\n"), "");
        assert_eq!(c.problem.as_deref(), Some(EMPTY));
        assert_eq!(c.ledger, Some(PathBuf::from("  ")));
        // A setting is laid over the file: the same problem.
        let c = load_layers(&[], Some(""), "ledger = \"\"");
        assert_eq!(c.problem.as_deref(), Some(EMPTY));
        for blank in ["", "  "] {
            let c = load(&[("DEPLOY_GUARD_LEDGER", blank)]);
            assert_eq!((c.ledger, c.problem), (None, None), "{blank:?}");
        }
        // It replaces a problem with the settings (the file is read without them).
        let c = load_layers(&[], Some("ledger = \"\"\n"), "no_such_key = 1");
        assert_eq!(c.problem.as_deref(), Some(EMPTY));
    }

    #[test]
    fn a_blank_metrics_address_is_none_wherever_it_comes_from() {
        assert_eq!(load(&[("DEPLOY_GUARD_METRICS_ADDR", " ")]).metrics_addr, None);
        let c = load_layers(
            &[("DEPLOY_GUARD_METRICS_ADDR", "9464")],
            Some("metrics_addr = \"\"\n"),
            "",
        );
        assert_eq!(
            c.metrics_addr, None,
            "the file's blank is not the environment's address"
        );
        assert_eq!(
            load(&[("DEPLOY_GUARD_METRICS_ADDR", " 0.0.0.0:9464 ")])
                .metrics_addr
                .as_deref(),
            Some(" 0.0.0.0:9464 ")
        );
    }

    #[test]
    fn paths_are_taken_as_given_and_flags_override_settings() {
        let c = load(&[("DEPLOY_GUARD_DB", ""), ("DEPLOY_GUARD_POLICY", " p ")]);
        assert_eq!((c.db, c.policy), (PathBuf::new(), PathBuf::from(" p ")));
        let flags = Overrides {
            db: Some("flag.db".into()),
            settings: toml::from_str("db = \"setting.db\"\npolicy = \"setting.wasm\"").expect("toml"),
            ..Overrides::default()
        };
        let c = Config::load_from(|_| None, &flags);
        assert_eq!(
            (c.db, c.policy),
            (PathBuf::from("flag.db"), PathBuf::from("setting.wasm"))
        );
    }

    #[test]
    fn keys_and_values_of_the_wrong_type_are_problems_in_serdes_words() {
        const KEYS: &str = "`db`, `policy`, `enabled`, `repos`, `self_hosting_repos`, `log`, `timeout_ms`, \
                            `fuel`, `memory_mib`, `busy_timeout_ms`, `cache`, `ledger`, `ledger_max_rows`, \
                            `metrics_addr`, `trusted_keys`, `poll_ms`, `registry_insecure`";
        for (file, problem) in [
            (
                "enabld = true\n",
                format!("unknown field `enabld`, expected one of {KEYS}"),
            ),
            (
                "db = 5\n",
                "invalid type: integer `5`, expected path string in `db`".to_owned(),
            ),
            (
                "policy = [\"p\"]\n",
                "invalid type: sequence, expected path string in `policy`".to_owned(),
            ),
            (
                "ledger = true\n",
                "invalid type: boolean `true`, expected path string in `ledger`".to_owned(),
            ),
            (
                "log = [\"json\"]\n",
                "invalid type: sequence, expected a string in `log`".to_owned(),
            ),
            (
                "cache = 0\n",
                "invalid type: integer `0`, expected a string in `cache`".to_owned(),
            ),
            (
                "metrics_addr = 9464\n",
                "invalid type: integer `9464`, expected a string in `metrics_addr`".to_owned(),
            ),
            (
                "db = \"d\"\nlog = 1\nzzz = 2\n",
                "invalid type: integer `1`, expected a string in `log`".to_owned(),
            ),
        ] {
            let c = from_file(file);
            assert_eq!(
                c.problem.as_deref().map(str::trim_end),
                Some(format!("config: cannot parse the config file <file>: {problem}").as_str()),
                "{file:?}"
            );
            assert_eq!(
                Config { problem: None, ..c },
                load(&[]),
                "{file:?}: nothing of the file is applied"
            );
            let c = load_layers(&[], None, file);
            assert_eq!(
                c.problem.as_deref().map(str::trim_end),
                Some(format!("config: setting: {problem}").as_str()),
                "{file:?}"
            );
        }
    }

    #[test]
    fn a_bad_setting_leaves_the_file_and_a_bad_file_drops_the_settings() {
        // A bad setting: a problem naming it; the file (without the settings) applies.
        let c = load_layers(&[], Some("repos = \"svc-a\"\n"), "enabled = false\nlog = 3");
        assert!(
            c.problem.as_deref().is_some_and(|p| p.starts_with("config: setting: ")),
            "{c:?}"
        );
        assert_eq!((c.scope_repos, c.enabled), (vec!["svc-a".to_owned()], true));
        // A file of the wrong types: nothing of it, nor of the settings, applies.
        let c = load_layers(&[], Some("db = 5\n"), "enabled = false");
        assert!(
            c.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("config: cannot parse")),
            "{c:?}"
        );
        assert!(c.enabled);
        // A setting of the right type covers the file's key of the wrong one.
        let c = load_layers(&[], Some("log = 3\n"), "log = \"json\"");
        assert_eq!((c.problem, c.log), (None, LogFormat::Json));
        // A file that cannot be read: the problem is the file's, and the settings apply.
        let overrides = Overrides {
            config_file: Some("/nonexistent/guard.toml".into()),
            settings: toml::from_str("enabled = false").expect("toml"),
            ..Overrides::default()
        };
        let c = Config::load_from(|_| None, &overrides);
        assert!(
            c.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("config: cannot read the config file /nonexistent/guard.toml: ")),
            "{c:?}"
        );
        assert!(!c.enabled);
        assert_eq!(c.file, Some(PathBuf::from("/nonexistent/guard.toml")));
        // A file problem comes before a settings problem.
        let c = load_layers(&[], Some("x = = 1\n"), "no_such_key = 1");
        assert!(
            c.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("config: cannot parse the config file <file>: TOML parse error")),
            "{c:?}"
        );
    }

    #[test]
    fn a_blank_config_variable_names_no_file() {
        for blank in ["", "  "] {
            let c = load(&[("DEPLOY_GUARD_CONFIG", blank)]);
            assert_eq!((c.file, c.problem), (None, None), "{blank:?}");
        }
    }

    #[test]
    fn an_unreadable_trusted_key_is_a_problem_unless_there_is_one_already() {
        let c = load(&[("DEPLOY_GUARD_TRUSTED_KEYS", " /nonexistent/k.pub, ")]);
        assert_eq!(c.trusted_keys, [PathBuf::from("/nonexistent/k.pub")]);
        assert!(
            c.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("trusted_keys: ") && p.contains("/nonexistent/k.pub")),
            "{c:?}"
        );
        let c = load_layers(
            &[("DEPLOY_GUARD_TRUSTED_KEYS", "/nonexistent/k.pub")],
            Some("ledger = \"\"\n"),
            "",
        );
        assert!(
            c.problem.as_deref().is_some_and(|p| p.contains("`ledger` is empty")),
            "{c:?}"
        );
    }
}
