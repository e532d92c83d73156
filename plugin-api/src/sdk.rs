//! The module author's side: a plain Rust trait, builders, and the shims that turn it into the ABI.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RString, RVec},
};

use crate::contract::{
    BackendRef, HostResult, HostStatus, InitRequest, Metadata, ModuleLib, ModuleLibRef, ParamKind, ParamSpec,
    ParamValue, Target, Task, TaskBox, Task_TO,
};

/// What a module implements. The value of `Self` is the initialised task.
pub trait TaskModule: Sized + Send + 'static {
    /// The module's description. Called once when the library is loaded.
    fn metadata() -> Metadata;

    /// Prepares a task from validated parameters, or says why it cannot.
    fn initialise(request: InitRequest) -> Result<Self, String>;

    /// Does the work, returning one result per host. An `Err` fails the whole job with that message.
    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String>;
}

/// The backend handle as a module sees it.
pub struct Context<'a> {
    backend: BackendRef<'a>,
}

impl Context<'_> {
    /// Runs `argv` on every host. Pass each argument separately: nothing is interpreted by a shell.
    pub fn run<S: AsRef<str>>(&self, hosts: &[Target], argv: &[S]) -> Vec<HostResult> {
        let argv: Vec<RString> = argv.iter().map(|a| RString::from(a.as_ref())).collect();
        self.backend.run(hosts.into(), argv.as_slice().into()).into_vec()
    }

    /// Copies `source` from the server's file store to `dest` on every host.
    pub fn copy_file(&self, hosts: &[Target], source: &str, dest: &str, mode: u32) -> Vec<HostResult> {
        self.backend.copy_file(hosts.into(), source.into(), dest.into(), mode).into_vec()
    }

    /// The backend's name, e.g. "ssh".
    pub fn backend_name(&self) -> String {
        self.backend.name().into_string()
    }

    /// True once the job was cancelled or timed out: stop soon.
    pub fn is_cancelled(&self) -> bool {
        self.backend.is_cancelled()
    }
}

impl Metadata {
    pub fn new(id: u32, name: &str, version: &str) -> Self {
        Metadata {
            id,
            name: name.into(),
            description: RString::new(),
            version: version.into(),
            backends: RVec::new(),
            params: RVec::new(),
        }
    }

    pub fn description(mut self, text: &str) -> Self {
        self.description = text.into();
        self
    }

    pub fn param(mut self, spec: ParamSpec) -> Self {
        self.params.push(spec);
        self
    }

    /// Restricts the module to these backends (by default it supports all).
    pub fn backends(mut self, names: &[&str]) -> Self {
        self.backends = names.iter().map(|n| RString::from(*n)).collect();
        self
    }
}

impl ParamSpec {
    /// A required whole number in `min..=max`.
    pub fn integer(name: &str, min: i64, max: i64) -> Self {
        Self::with_kind(name, ParamKind::Integer { min, max, default: ROption::RNone })
    }

    /// A required key from `choices`.
    pub fn choice(name: &str, choices: &[&str]) -> Self {
        let choices = choices.iter().map(|c| RString::from(*c)).collect();
        Self::with_kind(name, ParamKind::Choice { choices, default: ROption::RNone })
    }

    /// Required text matching `pattern` as a whole, at most `max_len` bytes.
    pub fn text(name: &str, pattern: &str, max_len: u32) -> Self {
        Self::with_kind(name, ParamKind::Text { pattern: pattern.into(), max_len, default: ROption::RNone })
    }

    fn with_kind(name: &str, kind: ParamKind) -> Self {
        ParamSpec { name: name.into(), description: RString::new(), required: true, kind }
    }

    pub fn describe(mut self, text: &str) -> Self {
        self.description = text.into();
        self
    }

    /// Makes the parameter optional: absent means absent (see [`ParamSpec::default_integer`] for a default).
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    /// A default for an integer parameter, which makes it optional in requests.
    pub fn default_integer(mut self, value: i64) -> Self {
        if let ParamKind::Integer { default, .. } = &mut self.kind {
            *default = ROption::RSome(value);
            self.required = false;
        }
        self
    }

    /// A default for a choice or text parameter, which makes it optional in requests.
    pub fn default_text(mut self, value: &str) -> Self {
        match &mut self.kind {
            ParamKind::Choice { default, .. } | ParamKind::Text { default, .. } => {
                *default = ROption::RSome(value.into());
                self.required = false;
            }
            ParamKind::Integer { .. } => {}
        }
        self
    }
}

impl InitRequest {
    /// The value of an integer parameter.
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.params.iter().find(|p| p.name == name).and_then(|p| match p.value {
            ParamValue::Integer(v) => Some(v),
            ParamValue::Text(_) => None,
        })
    }

    /// The value of a choice or text parameter.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|p| p.name == name).and_then(|p| match &p.value {
            ParamValue::Text(v) => Some(v.as_str()),
            ParamValue::Integer(_) => None,
        })
    }

    /// A site setting from the server's configuration.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|s| s.key == key).map(|s| s.value.as_str())
    }

    /// A site setting, or the module's default for it.
    pub fn setting_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.setting(key).unwrap_or(default)
    }
}

impl HostResult {
    /// A failure on `host` that happened before or instead of running anything.
    pub fn failed(host: &str, message: &str) -> Self {
        HostResult {
            host: host.into(),
            status: HostStatus::Failed,
            rc: ROption::RNone,
            stdout: RString::new(),
            stderr: message.into(),
            duration_ms: 0,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == HostStatus::Ok
    }
}

impl From<&str> for Target {
    /// A target whose name and address are the same, e.g. "127.0.0.1".
    fn from(host: &str) -> Self {
        Target { name: host.into(), address: host.into() }
    }
}

// ---- the shims behind export_module! ----

/// Builds the root module for `M`. Called once, by the loader, through [`export_module!`](crate::export_module).
pub fn module_lib<M: TaskModule>() -> ModuleLibRef {
    ModuleLib { metadata: metadata_shim::<M>, initialise: initialise_shim::<M> }.leak_into_prefix()
}

extern "C" fn metadata_shim<M: TaskModule>() -> RResult<Metadata, RString> {
    guarded(|| Ok(M::metadata()))
}

extern "C" fn initialise_shim<M: TaskModule>(request: InitRequest) -> RResult<TaskBox, RString> {
    guarded(|| M::initialise(request).map(|task| Task_TO::from_value(TaskShim(task), TD_Opaque)))
}

struct TaskShim<M>(M);

impl<M: TaskModule> Task for TaskShim<M> {
    fn run(&mut self, backend: BackendRef<'_>) -> RResult<RVec<HostResult>, RString> {
        let ctx = Context { backend };
        guarded(|| self.0.run(&ctx).map(RVec::from))
    }
}

/// Runs module code, turning a panic into an error: a panic must never unwind across the library boundary.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(message)) => RResult::RErr(message.into()),
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-text panic payload".to_owned());
            RResult::RErr(format!("module panicked: {detail}").into())
        }
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RSlice, RStr},
    };

    use super::*;
    use crate::contract::{Backend, Backend_TO};

    /// A backend that answers every command with its argv joined, so the tests see what the module asked for.
    struct Echo;

    impl Backend for Echo {
        fn name(&self) -> RString {
            "echo".into()
        }
        fn run(&self, hosts: RSlice<'_, Target>, argv: RSlice<'_, RString>) -> RVec<HostResult> {
            let line: Vec<&str> = argv.iter().map(|a| a.as_str()).collect();
            hosts
                .iter()
                .map(|h| HostResult { stdout: line.join(" ").into(), ..HostResult::failed(&h.name, "") })
                .collect()
        }
        fn copy_file(&self, hosts: RSlice<'_, Target>, _: RStr<'_>, _: RStr<'_>, _: u32) -> RVec<HostResult> {
            hosts.iter().map(|h| HostResult::failed(&h.name, "no copies here")).collect()
        }
        fn is_cancelled(&self) -> bool {
            false
        }
    }

    struct Tail {
        hosts: Vec<Target>,
        lines: i64,
    }

    impl TaskModule for Tail {
        fn metadata() -> Metadata {
            Metadata::new(1001, "Tail", "1.2.3").param(ParamSpec::integer("lines", 1, 10).default_integer(5))
        }
        fn initialise(request: InitRequest) -> Result<Self, String> {
            if request.setting("explode") == Some("init") {
                panic!("boom in initialise");
            }
            let lines = request.integer("lines").ok_or("no lines")?;
            Ok(Tail { hosts: request.hosts.into_vec(), lines })
        }
        fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
            if self.lines == 7 {
                panic!("boom in run");
            }
            Ok(ctx.run(&self.hosts, &["tail", "-n", &self.lines.to_string()]))
        }
    }

    fn request(lines: i64, settings: &[(&str, &str)]) -> InitRequest {
        InitRequest {
            module_id: 1001,
            hosts: vec![Target::from("127.0.0.1")].into(),
            params: vec![crate::Param { name: "lines".into(), value: ParamValue::Integer(lines) }].into(),
            settings: settings.iter().map(|(k, v)| crate::Setting { key: (*k).into(), value: (*v).into() }).collect(),
        }
    }

    fn run(lines: i64, settings: &[(&str, &str)]) -> Result<Vec<HostResult>, String> {
        let lib = module_lib::<Tail>();
        let mut task = lib.initialise()(request(lines, settings)).into_result().map_err(|e| e.into_string())?;
        let backend = Backend_TO::from_ptr(&Echo, TD_Opaque);
        task.run(backend).into_result().map(RVec::into_vec).map_err(|e| e.into_string())
    }

    #[test]
    fn the_shims_carry_metadata_and_results_across() {
        let meta = module_lib::<Tail>().metadata()().unwrap();
        assert_eq!((meta.id, meta.version.as_str(), meta.params.len()), (1001, "1.2.3", 1));
        assert!(!meta.params[0].required, "a default makes it optional");
        let results = run(3, &[]).unwrap();
        assert_eq!(results[0].stdout, "tail -n 3");
    }

    #[test]
    fn panics_become_errors_on_the_module_side() {
        assert_eq!(run(7, &[]).unwrap_err(), "module panicked: boom in run");
        assert_eq!(run(3, &[("explode", "init")]).unwrap_err(), "module panicked: boom in initialise");
    }

    #[test]
    fn defaults_and_settings() {
        let spec = ParamSpec::choice("service", &["nginx"]).default_text("nginx");
        assert!(matches!(&spec.kind, ParamKind::Choice { default: ROption::RSome(d), .. } if d == "nginx"));
        let req = request(3, &[("path", "/srv/log")]);
        assert_eq!((req.setting_or("path", "/x"), req.setting_or("other", "/x")), ("/srv/log", "/x"));
        assert_eq!(req.text("lines"), None, "an integer is not text");
    }
}
