//! The gate language: tokens, a recursive-descent parser (`or` of `and` of `not`/atoms), and
//! the checks made at parse time (known metric, its scope, its kind's operators and units,
//! known categories and verdicts), each error saying how to fix the expression.

use super::{Expr, Gate, GateError, Kind, Metric, Op, Scope, METRICS, ROUTE_METRICS, VERDICTS};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Num(f64, String),
    Op(Op),
    Open,
    Close,
    And,
    Or,
    Not,
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let (tok, len) = match (c, two.as_str()) {
            (_, ">=") => (Tok::Op(Op::Ge), 2),
            (_, "<=") => (Tok::Op(Op::Le), 2),
            (_, "==") => (Tok::Op(Op::Eq), 2),
            (_, "!=") => (Tok::Op(Op::Ne), 2),
            (_, "&&") => (Tok::And, 2),
            (_, "||") => (Tok::Or, 2),
            ('>', _) => (Tok::Op(Op::Gt), 1),
            ('<', _) => (Tok::Op(Op::Lt), 1),
            ('=', _) => (Tok::Op(Op::Eq), 1),
            ('!', _) => (Tok::Not, 1),
            ('(', _) => (Tok::Open, 1),
            (')', _) => (Tok::Close, 1),
            ('\'' | '"', _) => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| format!("the quote {c} is never closed"))?;
                let word: String = chars[i + 1..i + 1 + end].iter().collect();
                out.push(Tok::Word(word));
                i += end + 2;
                continue;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.' | '%'))
                {
                    i += 1;
                }
                if start == i {
                    return Err(format!("unexpected character {c:?}"));
                }
                let word: String = chars[start..i].iter().collect();
                let tok = match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => {
                        let digits = word
                            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == '-'))
                            .unwrap_or(word.len());
                        match word[..digits].parse::<f64>() {
                            Ok(n) if digits > 0 && n.is_finite() => {
                                Tok::Num(n, word[digits..].to_owned())
                            }
                            _ => Tok::Word(word),
                        }
                    }
                };
                out.push(tok);
                continue;
            }
        };
        out.push(tok);
        i += len;
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    scope: Scope,
    known_names: &'a dyn Fn(&str) -> Vec<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.unary()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("a parenthesis is never closed".into()),
                }
            }
            Some(Tok::Word(w)) => self.atom(&w),
            Some(Tok::Num(n, u)) => Err(format!(
                "expected a metric name before {n}{u}, e.g. `loop_blocked_pct > {n}{u}`"
            )),
            Some(t) => Err(format!("expected a metric name, found {}", describe(&t))),
            None => Err("the expression is empty or ends too early".into()),
        }
    }

    fn atom(&mut self, word: &str) -> Result<Expr, String> {
        let m = lookup(word)?;
        if m.scope == Scope::Diff && self.scope == Scope::Report {
            return Err(format!(
                "`{}` compares two recordings: it only applies to `loopprof diff`",
                m.name
            ));
        }
        if m.kind == Kind::Flag {
            if let Some(Tok::Op(op)) = self.peek() {
                return Err(format!(
                    "`{}` is a flag: use it alone (`{}` or `not {}`), not with {op}",
                    m.name, m.name, m.name
                ));
            }
            return Ok(Expr::Flag(m.name));
        }
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            other => {
                return Err(format!(
                    "expected a comparison after `{}` (> >= < <= == !=), found {}",
                    m.name,
                    other
                        .as_ref()
                        .map(describe)
                        .unwrap_or_else(|| "the end".into())
                ))
            }
        };
        let value = self.next();
        match (m.kind, value) {
            (Kind::Number, Some(Tok::Num(n, unit))) => {
                // Seconds given for a metric in milliseconds: say the value in its unit
                // (`2s` is `2000ms`, never "drop the unit", which would mean 2 ms).
                if unit == "s" && m.unit == "ms" {
                    return Err(format!(
                        "`{}` is measured in ms: write `{}ms`",
                        m.name,
                        n * 1000.0
                    ));
                }
                if !unit.is_empty() && unit != m.unit {
                    return Err(format!(
                        "`{}` is measured in {}; drop the unit `{unit}` or use `{}`",
                        m.name,
                        if m.unit.is_empty() {
                            "plain numbers"
                        } else {
                            m.unit
                        },
                        if m.unit.is_empty() {
                            format!("{n}")
                        } else {
                            format!("{n}{}", m.unit)
                        }
                    ));
                }
                Ok(Expr::Num(m.name, op, n))
            }
            (Kind::Number, other) => Err(format!(
                "`{}` is a number: compare it with a number, e.g. `{} {op} 5`; found {}",
                m.name,
                m.name,
                other
                    .as_ref()
                    .map(describe)
                    .unwrap_or_else(|| "the end".into())
            )),
            (Kind::Names, Some(Tok::Word(w))) | (Kind::Names, Some(Tok::Num(_, w))) => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(format!(
                        "`{}` is a name: compare it with == or !=, not {op}",
                        m.name
                    ));
                }
                let known = (self.known_names)(m.name);
                // Routes are the application's own: any may be named.
                if !ROUTE_METRICS.contains(&m.name) && !known.iter().any(|k| k == &w) {
                    return Err(format!(
                        "`{w}` is not a known {}; use one of: {}",
                        if m.name == "verdict" {
                            "verdict"
                        } else {
                            "category"
                        },
                        known.join(", ")
                    ));
                }
                Ok(Expr::Name(m.name, op, w))
            }
            (Kind::Names, other) => Err(format!(
                "`{}` is compared with a name, e.g. `{} == {}`; found {}",
                m.name,
                m.name,
                (self.known_names)(m.name)
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                other
                    .as_ref()
                    .map(describe)
                    .unwrap_or_else(|| "the end".into())
            )),
            (Kind::Flag, _) => unreachable!("flags return above"),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Num(n, u) => format!("`{n}{u}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::Open => "`(`".into(),
        Tok::Close => "`)`".into(),
        Tok::And => "`and`".into(),
        Tok::Or => "`or`".into(),
        Tok::Not => "`not`".into(),
    }
}

/// The metric named `word`, or an error naming the closest ones: by Jaro-Winkler similarity
/// (`strsim`) of the names with `-` read as `_`, which catches typos (`regresion`), dropped
/// letters (`loop_blockd_pct`) and `-`/`_` swaps (`max-stall-ms`).
fn lookup(word: &str) -> Result<&'static Metric, String> {
    let norm = word.replace('-', "_").to_lowercase();
    if let Some(m) = METRICS.iter().find(|m| m.name == word) {
        return Ok(m);
    }
    let mut scored: Vec<(f64, &str)> = METRICS
        .iter()
        .map(|m| (strsim::jaro_winkler(&norm, m.name), m.name))
        .filter(|(score, name)| *score >= 0.85 || *name == norm)
        .collect();
    scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    let near: Vec<&str> = scored.iter().take(2).map(|(_, n)| *n).collect();
    Err(format!(
        "unknown metric `{word}`{}; metrics: {}",
        if near.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", near.join(" or "))
        },
        METRICS
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Parses one `--fail-on` expression for a command of `scope`; `categories` are the ids of
/// the catalog in use (the values `category ==` accepts).
pub fn parse(src: &str, scope: Scope, categories: &[String]) -> Result<Gate, GateError> {
    let err = |message: String| GateError {
        expr: src.to_owned(),
        message,
    };
    let toks = tokenize(src).map_err(err)?;
    let known = |metric: &str| -> Vec<String> {
        if metric == "verdict" {
            VERDICTS.iter().map(|s| s.to_string()).collect()
        } else {
            categories.to_vec()
        }
    };
    let mut p = Parser {
        toks,
        pos: 0,
        scope,
        known_names: &known,
    };
    let expr = p.or().map_err(err)?;
    if let Some(t) = p.peek() {
        return Err(err(format!(
            "unexpected {} after a complete expression; join conditions with `and` / `or`",
            describe(t)
        )));
    }
    Ok(Gate {
        source: src.to_owned(),
        expr,
    })
}

/// Parses every `--fail-on` flag; the first bad one is the error.
pub fn parse_all(
    srcs: &[String],
    scope: Scope,
    categories: &[String],
) -> Result<Vec<Gate>, GateError> {
    srcs.iter().map(|s| parse(s, scope, categories)).collect()
}
