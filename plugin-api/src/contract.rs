//! The types that cross the library boundary. Everything here is `#[repr(C)]` and `StableAbi`: abi_stable checks
//! their layout when the server loads a module, so changing any of them is a breaking change of this crate.

// sabi_trait generates impls inside a const block; the lint is about the macro, not this code.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::{RRef, VersionStrings},
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// What a module is: read by the server when it loads the library, shown in `GET /api/modules`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Metadata {
    /// The module id, 1001 and up (the original's module ids). At most one loaded library serves an id.
    pub id: u32,
    /// A short human name, e.g. "View system log".
    pub name: RString,
    /// One or two sentences for the console.
    pub description: RString,
    /// The module's own version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: RString,
    /// Backends the module supports by name ("local", "ssh", "ansible", "saltstack", "func"); empty means all.
    pub backends: RVec<RString>,
    /// The parameters the module takes. The server validates requests against them before anything runs.
    pub params: RVec<ParamSpec>,
}

/// One parameter of a module.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// The key in the request's `params` object.
    pub name: RString,
    pub description: RString,
    /// A required parameter without a default must be given; an optional one may be absent.
    pub required: bool,
    pub kind: ParamKind,
}

/// The type of a parameter and the values it admits.
#[repr(u8)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// A whole number in `min..=max`.
    Integer { min: i64, max: i64, default: ROption<i64> },
    /// One of a fixed list of keys.
    Choice { choices: RVec<RString>, default: ROption<RString> },
    /// Text that matches `pattern` as a whole (Rust `regex` syntax, anchored by the server) and is at most
    /// `max_len` bytes long.
    Text { pattern: RString, max_len: u32, default: ROption<RString> },
}

/// A validated parameter value.
#[repr(u8)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub enum ParamValue {
    Integer(i64),
    Text(RString),
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Param {
    pub name: RString,
    pub value: ParamValue,
}

/// A site setting for a module, from the server's configuration (`[modules.<id>]`), e.g. `path.nginx`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Setting {
    pub key: RString,
    pub value: RString,
}

/// A host from the inventory. Backends choose which of the two they address (Salt and Func the name, Ansible
/// and SSH the address).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub name: RString,
    pub address: RString,
}

/// What `initialise` receives.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct InitRequest {
    pub module_id: u32,
    pub hosts: RVec<Target>,
    /// Every parameter of the schema that has a value (given or default), validated.
    pub params: RVec<Param>,
    pub settings: RVec<Setting>,
}

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStatus {
    /// The command ran and exited 0.
    Ok,
    /// The host was reached and the work failed (non-zero exit, missing file, refused by the backend).
    Failed,
    /// The host could not be reached.
    Unreachable,
}

/// The outcome of a piece of work on one host.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct HostResult {
    /// The target's name, as in the inventory.
    pub host: RString,
    pub status: HostStatus,
    /// The exit code, when a process ran and exited.
    pub rc: ROption<i32>,
    pub stdout: RString,
    pub stderr: RString,
    pub duration_ms: u64,
}

/// The execution backend, implemented by the server and lent to a task for the length of `run`.
///
/// Commands are argument vectors: no backend passes them through a shell built from their parts.
#[sabi_trait]
pub trait Backend: Sync {
    /// The backend's name: "local", "ssh", "ansible", "saltstack" or "func".
    fn name(&self) -> RString;

    /// Runs `argv` on every host, returning one result per host in the order of `hosts`.
    fn run(&self, hosts: RSlice<'_, Target>, argv: RSlice<'_, RString>) -> RVec<HostResult>;

    /// Copies `source` (a name relative to the server's file store) to `dest` on every host with `mode`.
    fn copy_file(&self, hosts: RSlice<'_, Target>, source: RStr<'_>, dest: RStr<'_>, mode: u32) -> RVec<HostResult>;

    /// True once the job was cancelled or timed out.
    #[sabi(last_prefix_field)]
    fn is_cancelled(&self) -> bool;
}

/// A borrowed backend handle, as a task receives it.
pub type BackendRef<'a> = Backend_TO<'a, RRef<'a, ()>>;

/// An initialised task, owned by the server until it has run.
#[sabi_trait]
pub trait Task: Send {
    #[sabi(last_prefix_field)]
    fn run(&mut self, backend: BackendRef<'_>) -> RResult<RVec<HostResult>, RString>;
}

pub type TaskBox = Task_TO<'static, RBox<()>>;

/// The root module every task-module library exports (through [`export_module!`](crate::export_module)).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ModuleLibRef)))]
#[sabi(missing_field(panic))]
pub struct ModuleLib {
    pub metadata: extern "C" fn() -> RResult<Metadata, RString>,
    #[sabi(last_prefix_field)]
    pub initialise: extern "C" fn(InitRequest) -> RResult<TaskBox, RString>,
}

impl RootModule for ModuleLibRef {
    declare_root_module_statics! {ModuleLibRef}
    const BASE_NAME: &'static str = "omserver_module";
    const NAME: &'static str = "omserver task module";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
