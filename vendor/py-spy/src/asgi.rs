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
use crate::python_interpreters::{InterpreterState, Object, TypeObject};
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
}

/// Caches of objects that live as long as the application: interned key strings (the scope's
/// keys are literals in the server's code), type names by type object, and route objects.
#[derive(Default)]
pub struct AsgiCache {
    keys: HashMap<usize, String>,
    types: HashMap<usize, String>,
    routes: HashMap<usize, Option<String>>,
}

/// Most entries of a cache before it starts over.
const CACHE_LIMIT: usize = 4096;
/// Scopes are small; a larger dict is not one.
const MAX_SCOPE_ENTRIES: usize = 64;

struct Reader<'a, I: InterpreterState, P: ProcessMemory> {
    process: &'a P,
    version: &'a Version,
    cache: &'a mut AsgiCache,
    _i: std::marker::PhantomData<I>,
}

impl<I: InterpreterState, P: ProcessMemory> Reader<'_, I, P> {
    /// The type name of the object at `addr` (one read once its type is known).
    fn type_name(&mut self, addr: usize) -> Result<String, Error> {
        let obj: I::Object = self.process.copy_struct(addr)?;
        let tp = obj.ob_type() as usize;
        if let Some(name) = self.cache.types.get(&tp) {
            return Ok(name.clone());
        }
        let tp_obj = self.process.copy_pointer(obj.ob_type())?;
        let raw = self.process.copy(tp_obj.name() as usize, 32)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        self.cache.types.insert(tp, name.clone());
        Ok(name)
    }

    fn string(&mut self, addr: usize) -> Option<String> {
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

    /// The `path_format` (else `path`) attribute of a route object, from its instance dict.
    fn route_path(&mut self, addr: usize) -> Result<Option<String>, Error> {
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
                return Ok(None);
            }
            let dict: usize = self
                .process
                .copy_struct((addr as isize + offset) as usize)?;
            if dict == 0 {
                return Ok(None);
            }
            DictIterator::from(self.process, self.version, dict)?.read_all(MAX_SCOPE_ENTRIES)?
        };
        let mut path = None;
        for (key, value) in items {
            match self.string(key).as_deref() {
                Some("path_format") => return Ok(self.string(value)),
                Some("path") => path = self.string(value),
                _ => {}
            }
        }
        Ok(path)
    }
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
    for c in [cache.keys.len(), cache.types.len(), cache.routes.len()] {
        if c >= CACHE_LIMIT {
            *cache = AsgiCache::default();
        }
    }
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
