//! loopprof patch: reads an ASGI connection scope (the `scope` dict every ASGI application
//! receives: https://asgi.readthedocs.io/en/latest/specs/www.html) from the target's memory,
//! to tell which HTTP route a stack is serving. Only plain data is read: the dict's entries,
//! `str` and `int` values, and the `path_format`/`path` attribute of the route object FastAPI
//! and Starlette routers put under `scope["route"]`. Every object is checked to have the
//! expected type first; anything else gives `Ok(None)`.

use std::collections::HashMap;

use anyhow::Error;
use remoteprocess::ProcessMemory;

use crate::python_data_access::{copy_long, copy_string, DictIterator, PY_TPFLAGS_MANAGED_DICT};
use crate::python_interpreters::{InterpreterState, ListObject, Object, TypeObject};
use crate::version::Version;

/// What the route-relevant keys of one ASGI scope held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsgiScope {
    /// `scope["type"]`: `http`, `websocket` or `lifespan`.
    pub kind: String,
    /// `scope["method"]` (HTTP only).
    pub method: Option<String>,
    /// `scope["path"]`: the request path.
    pub path: Option<String>,
    /// `scope["root_path"]`, when not empty (a mount or `--root-path`).
    pub root_path: Option<String>,
    /// `scope["path_params"]` as (name, value) for `str` and `int` values, once routed.
    pub path_params: Vec<(String, String)>,
    /// `path_format` (else `path`) of `scope["route"]`, once a FastAPI/Starlette router
    /// matched a route object.
    pub route_path: Option<String>,
    /// The address of `scope["router"]` (set by Starlette's router), 0 when absent: read
    /// its route table with [`read_routes`].
    pub router: usize,
}

/// Caches of objects that live as long as the application: interned key strings (the scope's
/// keys are literals in the server's code), type names by type object, and route objects.
#[derive(Default)]
pub struct AsgiCache {
    keys: HashMap<usize, String>,
    types: HashMap<usize, String>,
    routes: HashMap<usize, Option<String>>,
}

impl AsgiCache {
    /// Starts over when any of the caches reached [`CACHE_LIMIT`] entries.
    pub(crate) fn trim(&mut self) {
        if [self.keys.len(), self.types.len(), self.routes.len()]
            .iter()
            .any(|n| *n >= CACHE_LIMIT)
        {
            *self = AsgiCache::default();
        }
    }
}

/// Most entries of a cache before it starts over.
const CACHE_LIMIT: usize = 4096;
/// Scopes are small; a larger dict is not one.
const MAX_SCOPE_ENTRIES: usize = 64;

/// Reads plain objects (types, strings, dicts, instance attributes, lists) of one process;
/// shared with `crate::tasks`.
pub(crate) struct Reader<'a, I: InterpreterState, P: ProcessMemory> {
    pub(crate) process: &'a P,
    pub(crate) version: &'a Version,
    pub(crate) cache: &'a mut AsgiCache,
    _i: std::marker::PhantomData<I>,
}

impl<'a, I: InterpreterState, P: ProcessMemory> Reader<'a, I, P> {
    /// A reader of `process` (a CPython `version`) keeping what it learns in `cache`.
    pub(crate) fn new(process: &'a P, version: &'a Version, cache: &'a mut AsgiCache) -> Self {
        Reader {
            process,
            version,
            cache,
            _i: std::marker::PhantomData,
        }
    }
}

impl<I: InterpreterState, P: ProcessMemory> Reader<'_, I, P> {
    /// The type name of the object at `addr` (one read once its type is known).
    pub(crate) fn type_name(&mut self, addr: usize) -> Result<String, Error> {
        let obj: I::Object = self.process.copy_struct(addr)?;
        self.type_name_of_type(obj.ob_type() as usize)
    }

    /// The name of the type object at `tp` (cached by address).
    pub(crate) fn type_name_of_type(&mut self, tp: usize) -> Result<String, Error> {
        if let Some(name) = self.cache.types.get(&tp) {
            return Ok(name.clone());
        }
        let tp_obj: <I::Object as Object>::TypeObject = self.process.copy_struct(tp)?;
        let raw = self.process.copy(tp_obj.name() as usize, 32)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        self.cache.types.insert(tp, name.clone());
        Ok(name)
    }

    pub(crate) fn string(&mut self, addr: usize) -> Option<String> {
        match self.type_name(addr).ok()?.as_str() {
            "str" => copy_string(addr as *const I::StringObject, self.process).ok(),
            _ => None,
        }
    }

    fn scalar(&mut self, addr: usize) -> Option<String> {
        match self.type_name(addr).ok()?.as_str() {
            "str" => copy_string(addr as *const I::StringObject, self.process).ok(),
            "int" => match copy_long(self.process, self.version, addr).ok()? {
                (v, false) => Some(v.to_string()),
                _ => None,
            },
            _ => None,
        }
    }

    /// A dict's key names (cached by key object: the keys read here are literals) and values.
    fn dict(&mut self, addr: usize) -> Result<Vec<(String, usize)>, Error> {
        let mut out = Vec::new();
        for (key, value) in
            DictIterator::from(self.process, self.version, addr)?.read_all(MAX_SCOPE_ENTRIES)?
        {
            let name = match self.cache.keys.get(&key) {
                Some(k) => k.clone(),
                None => {
                    let Some(k) = self.string(key) else {
                        continue;
                    };
                    self.cache.keys.insert(key, k.clone());
                    k
                }
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// An object's instance attributes (its `__dict__`, managed or not): (name, value).
    pub(crate) fn attrs(&mut self, addr: usize) -> Result<Vec<(String, usize)>, Error> {
        let obj: I::Object = self.process.copy_struct(addr)?;
        let tp = self.process.copy_pointer(obj.ob_type())?;
        let flags = tp.flags();
        let items = if flags & PY_TPFLAGS_MANAGED_DICT != 0 {
            let mut out = Vec::new();
            for item in DictIterator::from_managed_dict(
                self.process,
                self.version,
                addr,
                obj.ob_type() as usize,
                flags,
            )?
            .take(MAX_SCOPE_ENTRIES)
            {
                out.push(item?);
            }
            out
        } else {
            let offset = tp.dictoffset();
            if offset <= 0 {
                return Ok(Vec::new());
            }
            let dict: usize = self
                .process
                .copy_struct((addr as isize + offset) as usize)?;
            if dict == 0 {
                return Ok(Vec::new());
            }
            DictIterator::from(self.process, self.version, dict)?.read_all(MAX_SCOPE_ENTRIES)?
        };
        let mut out = Vec::with_capacity(items.len());
        for (key, value) in items {
            let name = match self.cache.keys.get(&key) {
                Some(k) => k.clone(),
                None => {
                    let Some(k) = self.string(key) else {
                        continue;
                    };
                    self.cache.keys.insert(key, k.clone());
                    k
                }
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// The `path_format` (else `path`) attribute of a route object, from its instance dict.
    fn route_path(&mut self, addr: usize) -> Result<Option<String>, Error> {
        let mut path = None;
        for (key, value) in self.attrs(addr)? {
            match key.as_str() {
                "path_format" => return Ok(self.string(value)),
                "path" => path = self.string(value),
                _ => {}
            }
        }
        Ok(path)
    }

    /// The items of a `list` (at most `MAX_ROUTES`).
    pub(crate) fn list(&mut self, addr: usize) -> Result<Vec<usize>, Error> {
        if self.type_name(addr)? != "list" {
            return Ok(Vec::new());
        }
        let list: I::ListObject = self.process.copy_struct(addr)?;
        let n = list.size().min(MAX_ROUTES);
        if n == 0 {
            return Ok(Vec::new());
        }
        let ptr = std::mem::size_of::<usize>();
        let bytes = self.process.copy(list.item() as usize, n * ptr)?;
        Ok(bytes
            .chunks_exact(ptr)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..ptr].copy_from_slice(c);
                usize::from_ne_bytes(b)
            })
            .filter(|a| *a != 0)
            .collect())
    }

    /// The `str` members of a small `set` or `frozenset` (a route's methods). `PySetObject`
    /// (Include/cpython/setobject.h, unchanged 3.8-3.15): after the object header come
    /// `fill`, `used`, `mask` and `table`, a `setentry {key, hash}` array of `mask + 1` slots.
    fn str_set(&mut self, addr: usize) -> Result<Vec<String>, Error> {
        if !matches!(self.type_name(addr)?.as_str(), "set" | "frozenset") {
            return Ok(Vec::new());
        }
        let ptr = std::mem::size_of::<usize>();
        let head = std::mem::size_of::<I::Object>();
        let mask: usize = self.process.copy_struct(addr + head + 2 * ptr)?;
        let table: usize = self.process.copy_struct(addr + head + 3 * ptr)?;
        if mask > 63 || table == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.process.copy(table, (mask + 1) * 2 * ptr)?;
        let mut out = Vec::new();
        for entry in bytes.chunks_exact(2 * ptr) {
            let mut b = [0u8; 8];
            b[..ptr].copy_from_slice(&entry[..ptr]);
            let key = usize::from_ne_bytes(b);
            // Empty slots are NULL; deleted ones hold a dummy object that is not a `str`.
            if key != 0 {
                if let Some(s) = self.string(key) {
                    out.push(s);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The name a stack shows for frames of the function at `addr`: its `__qualname__` on
    /// 3.11+ (where frames carry `co_qualname`), its `__name__` before.
    fn function_name(&mut self, addr: usize) -> Option<String> {
        if self.type_name(addr).ok()? != "function" {
            return None;
        }
        let head = std::mem::size_of::<I::Object>();
        let ptr = std::mem::size_of::<usize>();
        // PyFunctionObject (Include/funcobject.h): 3.8-3.9 start with func_code, func_globals,
        // func_defaults, func_kwdefaults, func_closure, func_doc, func_name; 3.10+ with
        // func_globals, func_builtins, func_name, func_qualname.
        let offset = match (self.version.major, self.version.minor) {
            (3, 8) | (3, 9) => head + 6 * ptr,
            (3, 10) => head + 2 * ptr,
            (3, 11..=15) => head + 3 * ptr,
            _ => return None,
        };
        let name: usize = self.process.copy_struct(addr + offset).ok()?;
        self.string(name)
    }

    /// The routes of a Starlette/FastAPI router object (its `routes` list), recursing into
    /// `Mount`s (a `Router` or an app with a `router`) up to `depth` levels.
    fn routes(&mut self, router: usize, prefix: &str, depth: u8, out: &mut Vec<RouteEntry>) {
        let Ok(attrs) = self.attrs(router) else {
            return;
        };
        let list = match attrs.iter().find(|(k, _)| k == "routes") {
            Some((_, l)) => *l,
            None => {
                // An application (FastAPI/Starlette) mounted as a whole: its router.
                if let Some((_, r)) = attrs.iter().find(|(k, _)| k == "router") {
                    if depth > 0 {
                        let r = *r;
                        self.routes(r, prefix, depth - 1, out);
                    }
                }
                return;
            }
        };
        for route in self.list(list).unwrap_or_default() {
            if out.len() >= MAX_ROUTES {
                return;
            }
            let kind = self.type_name(route).unwrap_or_default();
            let Ok(attrs) = self.attrs(route) else {
                continue;
            };
            let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            // A container of routes: Starlette's `Mount` (`path`, `app`), FastAPI's lazily
            // included router (`original_router`, `include_context.prefix`, FastAPI 0.16x).
            let inner =
                get("original_router").or_else(|| get("app").filter(|_| kind.contains("Mount")));
            if let Some(inner) = inner {
                let own = match get("include_context") {
                    Some(ctx) => self
                        .attrs(ctx)
                        .ok()
                        .and_then(|a| a.into_iter().find(|(k, _)| k == "prefix"))
                        .and_then(|(_, p)| self.string(p)),
                    None => get("path").and_then(|p| self.string(p)),
                }
                .unwrap_or_default();
                if depth > 0 {
                    self.routes(inner, &format!("{prefix}{own}"), depth - 1, out);
                }
                continue;
            }
            let Some(path) = get("path_format")
                .or_else(|| get("path"))
                .and_then(|p| self.string(p))
            else {
                continue;
            };
            let Some(endpoint) = get("endpoint").and_then(|e| self.function_name(e)) else {
                continue;
            };
            let methods = match get("methods") {
                Some(m) => self.str_set(m).unwrap_or_default(),
                None => Vec::new(),
            };
            let verb = if kind.contains("WebSocket") {
                "WS".to_owned()
            } else if methods.is_empty() {
                "?".to_owned()
            } else if methods.len() == 2 && methods.iter().any(|m| m == "HEAD") {
                // Starlette adds HEAD to every GET route.
                methods
                    .iter()
                    .find(|m| *m != "HEAD")
                    .cloned()
                    .unwrap_or_default()
            } else {
                methods.join(",")
            };
            out.push(RouteEntry {
                route: format!("{verb} {prefix}{path}"),
                endpoint,
            });
        }
    }
}

impl<I: InterpreterState, P: ProcessMemory> Reader<'_, I, P> {
    /// `sys.modules[module].<attr>`, from the interpreter's modules dict at `modules`.
    pub(crate) fn module_attr(
        &mut self,
        modules: usize,
        module: &str,
        attr: &str,
    ) -> Option<usize> {
        let mut found = None;
        for item in DictIterator::from(self.process, self.version, modules)
            .ok()?
            .take(100_000)
        {
            let (key, value) = item.ok()?;
            if copy_string(key as *const I::StringObject, self.process).ok()? == module {
                found = Some(value);
                break;
            }
        }
        let m = found?;
        if self.type_name(m).ok()? != "module" {
            return None;
        }
        let obj: I::Object = self.process.copy_struct(m).ok()?;
        let tp = self.process.copy_pointer(obj.ob_type()).ok()?;
        let dict: usize = self
            .process
            .copy_struct((m as isize + tp.dictoffset()) as usize)
            .ok()?;
        for item in DictIterator::from(self.process, self.version, dict)
            .ok()?
            .take(100_000)
        {
            let (key, value) = item.ok()?;
            if copy_string(key as *const I::StringObject, self.process).ok()? == attr {
                return Some(value);
            }
        }
        None
    }

    /// The routes of an ASGI application object: its `router` (FastAPI, Starlette), itself
    /// when it is a router, or, through middleware that wraps it (`self.app`), the wrapped
    /// application's, up to `depth` wrappers.
    fn app_routes(&mut self, app: usize, depth: u8, out: &mut Vec<RouteEntry>) {
        let Ok(attrs) = self.attrs(app) else {
            return;
        };
        if attrs.iter().any(|(k, _)| k == "routes") {
            self.routes(app, "", 3, out);
        } else if let Some((_, r)) = attrs.iter().find(|(k, _)| k == "router") {
            let r = *r;
            self.routes(r, "", 3, out);
        } else if let (Some((_, inner)), true) = (attrs.iter().find(|(k, _)| k == "app"), depth > 0)
        {
            let inner = *inner;
            self.app_routes(inner, depth - 1, out);
        }
    }
}

/// Reads the route table of the application `module:attr` (the import string given to
/// uvicorn or gunicorn) from the interpreter's `sys.modules` (`modules_ptr`: the address of
/// the pointer to it, `PythonProcessLayout::imports_modules_address`). Empty when the module
/// or attribute is not found or holds no router (an app factory, a non-Starlette app).
pub fn read_app_routes<I: InterpreterState, P: ProcessMemory>(
    process: &P,
    version: &Version,
    modules_ptr: usize,
    module: &str,
    attr: &str,
    cache: &mut AsgiCache,
) -> Vec<RouteEntry> {
    let Ok(modules) = process.copy_struct::<usize>(modules_ptr) else {
        return Vec::new();
    };
    let mut r = Reader::<I, P> {
        process,
        version,
        cache,
        _i: std::marker::PhantomData,
    };
    let mut out = Vec::new();
    let mut obj = r.module_attr(modules, module, attr.split('.').next().unwrap_or(attr));
    // `pkg.mod:holder.app`: follow the dotted attribute.
    for part in attr.split('.').skip(1) {
        obj = obj.and_then(|o| {
            r.attrs(o)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == part)
                .map(|(_, v)| v)
        });
    }
    if let Some(app) = obj {
        r.app_routes(app, 6, &mut out);
    }
    out
}

/// Most routes read from one router (mounts included).
const MAX_ROUTES: usize = 1024;

/// One route of an application's route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// `GET /orders/{order_id}` (methods joined by `,`), `WS /feed`.
    pub route: String,
    /// The name stacks show for the endpoint function (qualname on 3.11+, name before).
    pub endpoint: String,
}

/// Reads the route table of the router at `router` (`scope["router"]`, which Starlette's
/// router sets on every request it dispatches): every route's method(s), path template and
/// endpoint function name, mounts followed three levels deep, at most 1,024 routes. Routes
/// whose endpoint is not a plain function (a class, a `functools.partial`) are left out.
pub fn read_routes<I: InterpreterState, P: ProcessMemory>(
    process: &P,
    version: &Version,
    router: usize,
    cache: &mut AsgiCache,
) -> Vec<RouteEntry> {
    let mut r = Reader::<I, P> {
        process,
        version,
        cache,
        _i: std::marker::PhantomData,
    };
    let mut out = Vec::new();
    r.routes(router, "", 3, &mut out);
    out
}

/// Reads the ASGI scope dict at `addr` (a `scope` argument, possibly in a cell). `Ok(None)`
/// when the object there is not a dict with a `str` `type` entry. About six reads of the
/// target's memory for a routed FastAPI request once the caches are warm.
pub fn read_scope<I: InterpreterState, P: ProcessMemory>(
    process: &P,
    version: &Version,
    mut addr: usize,
    cache: &mut AsgiCache,
) -> Result<Option<AsgiScope>, Error> {
    if addr == 0 {
        return Ok(None);
    }
    cache.trim();
    let mut r = Reader::<I, P> {
        process,
        version,
        cache,
        _i: std::marker::PhantomData,
    };
    let mut name = r.type_name(addr)?;
    if name == "cell" {
        // PyCellObject: {PyObject_HEAD; PyObject *ob_ref}.
        addr = process.copy_struct(addr + std::mem::size_of::<I::Object>())?;
        if addr == 0 {
            return Ok(None);
        }
        name = r.type_name(addr)?;
    }
    if name != "dict" {
        return Ok(None);
    }
    let mut scope = AsgiScope::default();
    let (mut route, mut params, mut path) = (None, None, None);
    for (key, value) in r.dict(addr)? {
        match key.as_str() {
            "type" => scope.kind = r.string(value).unwrap_or_default(),
            "method" => scope.method = r.string(value),
            "root_path" => scope.root_path = r.string(value).filter(|p| !p.is_empty()),
            "path" => path = Some(value),
            "route" => route = Some(value),
            "path_params" => params = Some(value),
            "router" => scope.router = value,
            _ => {}
        }
    }
    if !matches!(scope.kind.as_str(), "http" | "websocket" | "lifespan") {
        return Ok(None);
    }
    if let Some(route) = route {
        scope.route_path = match r.cache.routes.get(&route) {
            Some(p) => p.clone(),
            None => {
                let p = r.route_path(route).ok().flatten();
                r.cache.routes.insert(route, p.clone());
                p
            }
        };
    }
    if scope.route_path.is_none() {
        scope.path = path.and_then(|p| r.string(p));
        if let Some(params) = params {
            if r.type_name(params)? == "dict" {
                for (key, value) in r.dict(params)? {
                    if let Some(v) = r.scalar(value) {
                        scope.path_params.push((key, v));
                    }
                }
            }
        }
    }
    Ok(Some(scope))
}

// `Reader::function_name` reads `func_qualname` at header + 3 pointers on 3.11+: pinned
// against the generated bindings of every such version (a compile error if one differs).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use crate::python_bindings::{v3_11_0, v3_12_0, v3_13_0, v3_14_0, v3_15_0};
    assert!(std::mem::offset_of!(v3_11_0::PyFunctionObject, func_qualname) == 40);
    assert!(std::mem::offset_of!(v3_12_0::PyFunctionObject, func_qualname) == 40);
    assert!(std::mem::offset_of!(v3_13_0::PyFunctionObject, func_qualname) == 40);
    assert!(std::mem::offset_of!(v3_14_0::PyFunctionObject, func_qualname) == 40);
    assert!(std::mem::offset_of!(v3_15_0::PyFunctionObject, func_qualname) == 40);
};
