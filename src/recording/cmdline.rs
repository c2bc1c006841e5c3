//! What a server's command line says about the application it serves: the ASGI import
//! string (`app.main:app`) that uvicorn and gunicorn are given. Used by the capture stage (to
//! find the application's route table) and by the reports (to select the same server again
//! after a restart). Pure.

/// The ASGI application's import string in a server's command line (`uvicorn app.main:app`,
/// `gunicorn -k uvicorn.workers.UvicornWorker app.main:app`): the first argument that is a
/// dotted module path, `:`, and a dotted attribute path, all Python identifiers (so
/// `127.0.0.1:8000` and `unix:/tmp/s.sock` are not). `(module, attribute)`. Pure.
pub fn app_import_string(argv: &[String]) -> Option<(String, String)> {
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|p| {
                let mut c = p.chars();
                c.next().is_some_and(|f| f.is_alphabetic() || f == '_')
                    && c.all(|x| x.is_alphanumeric() || x == '_')
            })
    };
    argv.iter().skip(1).find_map(|a| {
        let (m, attr) = a.split_once(':')?;
        (!a.starts_with('-') && ident(m) && ident(attr)).then(|| (m.to_owned(), attr.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_import_string_is_found_in_server_command_lines() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            app_import_string(&argv(
                "/v/bin/python /v/bin/uvicorn --host 127.0.0.1 --port 8000 app.main:app"
            )),
            Some(("app.main".into(), "app".into()))
        );
        assert_eq!(
            app_import_string(&argv("gunicorn -b 0.0.0.0:8000 --bind unix:/tmp/s.sock -k uvicorn.workers.UvicornWorker svc:create.app")),
            Some(("svc".into(), "create.app".into()))
        );
        assert_eq!(
            app_import_string(&argv("python -m myservice --port 8000")),
            None
        );
        assert_eq!(app_import_string(&argv("uvicorn localhost:8000")), None);
    }
}
