//! The HTTP route a stack is serving, from the ASGI `scope` the vendored py-spy reads out of
//! the innermost ASGI application frame (`py_spy::asgi`, loopprof patch 6): the method and
//! the path template (`GET /orders/{order_id}`), `WS /feed` for a websocket, `lifespan` for
//! start-up and shutdown. The template is the matched route object's `path_format` (FastAPI
//! and Starlette routers put the route under `scope["route"]`) under the scope's `root_path`;
//! without a route object, the request path with each path parameter's value put back as
//! `{name}`; before routing, the request path itself.

use py_spy::asgi::AsgiScope;

/// The route label of one scope, or `None` for a scope of an unknown type. Pure.
pub fn route_label(scope: &AsgiScope) -> Option<String> {
    match scope.kind.as_str() {
        "lifespan" => return Some("lifespan".to_owned()),
        "http" | "websocket" => {}
        _ => return None,
    }
    let template = match &scope.route_path {
        Some(route) => {
            let root = scope.root_path.as_deref().unwrap_or("");
            // Starlette before 0.33 strips a mount's prefix from `path` and keeps it in
            // `root_path`; later versions keep the whole path and the route path relative.
            if route.starts_with(root) {
                route.clone()
            } else {
                format!("{}{route}", root.trim_end_matches('/'))
            }
        }
        None => template_from_params(scope.path.as_deref()?, &scope.path_params),
    };
    match scope.kind.as_str() {
        "http" => Some(format!(
            "{} {template}",
            scope.method.as_deref().unwrap_or("?")
        )),
        _ => Some(format!("WS {template}")),
    }
}

/// Whether a frame's file is Starlette's background-task runner (`starlette/background.py`,
/// `BackgroundTask.__call__`), which FastAPI's `BackgroundTasks` use too. Pure; called for
/// every frame of a routed stack, so it allocates nothing.
pub fn is_background_task(file: &str) -> bool {
    file.ends_with("/starlette/background.py")
}

/// The request path with each path parameter's value replaced by `{name}`: the last run of
/// whole segments equal to the value (a `{p:path}` value spans several), so
/// `/users/7/orders/7` with `order=7` gives `/users/7/orders/{order}`.
fn template_from_params(path: &str, params: &[(String, String)]) -> String {
    let mut segments: Vec<String> = path.split('/').map(str::to_owned).collect();
    for (name, value) in params {
        if value.is_empty() {
            continue;
        }
        let want: Vec<&str> = value.split('/').collect();
        let n = want.len();
        if n > segments.len() {
            continue;
        }
        if let Some(at) = (0..=segments.len() - n)
            .rev()
            .find(|&i| segments[i..i + n].iter().zip(&want).all(|(a, b)| a == b))
        {
            segments.splice(at..at + n, [format!("{{{name}}}")]);
        }
    }
    segments.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(kind: &str, method: Option<&str>, path: &str) -> AsgiScope {
        AsgiScope {
            kind: kind.into(),
            method: method.map(Into::into),
            path: Some(path.into()),
            ..AsgiScope::default()
        }
    }

    #[test]
    fn a_route_object_gives_the_template() {
        let mut s = scope("http", Some("GET"), "/orders/42");
        s.route_path = Some("/orders/{order_id}".into());
        assert_eq!(route_label(&s).unwrap(), "GET /orders/{order_id}");
        // Mounted under /api (Starlette < 0.33 keeps the prefix in root_path only).
        s.root_path = Some("/api".into());
        assert_eq!(route_label(&s).unwrap(), "GET /api/orders/{order_id}");
        s.route_path = Some("/api/orders/{order_id}".into());
        assert_eq!(route_label(&s).unwrap(), "GET /api/orders/{order_id}");
    }

    #[test]
    fn path_parameters_are_put_back_as_names() {
        let mut s = scope("http", Some("POST"), "/users/7/orders/7");
        s.path_params = vec![("order".into(), "7".into())];
        assert_eq!(route_label(&s).unwrap(), "POST /users/7/orders/{order}");
        let mut s = scope("http", Some("GET"), "/files/a/b/c.txt");
        s.path_params = vec![("p".into(), "a/b/c.txt".into())];
        assert_eq!(route_label(&s).unwrap(), "GET /files/{p}");
        // Not routed yet (a middleware): the path as it is.
        assert_eq!(
            route_label(&scope("http", Some("GET"), "/health")).unwrap(),
            "GET /health"
        );
    }

    #[test]
    fn background_tasks_are_told_by_starlettes_runner() {
        assert!(is_background_task(
            "/v/lib/python3.11/site-packages/starlette/background.py"
        ));
        assert!(!is_background_task("/srv/app/background.py"));
    }

    #[test]
    fn websockets_and_lifespan_are_named_and_unknown_types_are_not_routes() {
        assert_eq!(
            route_label(&scope("websocket", None, "/feed")).unwrap(),
            "WS /feed"
        );
        assert_eq!(
            route_label(&scope("lifespan", None, "")).unwrap(),
            "lifespan"
        );
        assert_eq!(route_label(&scope("other", None, "/x")), None);
    }
}
