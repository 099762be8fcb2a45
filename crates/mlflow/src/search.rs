//! MLflow's search filters (`name = 'clinic' AND tags.team LIKE 'ml%'`): clauses joined by
//! `AND`, each an attribute, a comparator and a value. Attributes are `name`, `tags.<k>`,
//! `params.<k>`, `metrics.<k>`, `attributes.<k>` or a bare attribute; keys may be quoted
//! with backticks or double quotes. Comparators: `=`, `!=`, `<`, `<=`, `>`, `>=`, `LIKE`,
//! `ILIKE`, `IN`, `NOT IN`. Anything else is refused with where it went wrong.

use crate::MlError;

/// What a clause compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A list (for `IN`).
    List(Vec<Value>),
}

/// The attribute a clause names: its kind (`tags`, `params`, `metrics`, `attributes`) and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// `tags`, `params`, `metrics` or `attributes` (a bare name is an attribute).
    pub kind: String,
    /// The key.
    pub key: String,
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// What is compared.
    pub ident: Ident,
    /// The comparator, upper-case.
    pub op: String,
    /// The value compared with.
    pub value: Value,
}

/// A parsed filter: every clause must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// The clauses.
    pub clauses: Vec<Clause>,
}

impl Filter {
    /// Parses `text` (empty: matches everything).
    pub fn parse(text: &str) -> Result<Self, MlError> {
        let toks = tokenize(text)?;
        let mut clauses = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            if !clauses.is_empty() {
                match &toks[i] {
                    Tok::Word(w) if w.eq_ignore_ascii_case("and") => i += 1,
                    t => return Err(bad(text, &format!("expected AND, found {t:?}"))),
                }
            }
            let ident = match toks.get(i) {
                Some(Tok::Word(w)) | Some(Tok::Quoted(w, '`')) | Some(Tok::Quoted(w, '"')) => {
                    ident(w)
                }
                t => return Err(bad(text, &format!("expected an attribute, found {t:?}"))),
            };
            i += 1;
            let mut op = match toks.get(i) {
                Some(Tok::Op(o)) => o.clone(),
                Some(Tok::Word(w)) => w.to_ascii_uppercase(),
                t => return Err(bad(text, &format!("expected a comparator, found {t:?}"))),
            };
            i += 1;
            if op == "NOT" {
                match toks.get(i) {
                    Some(Tok::Word(w)) if w.eq_ignore_ascii_case("in") => {
                        op = "NOT IN".into();
                        i += 1;
                    }
                    _ => return Err(bad(text, "NOT must be followed by IN")),
                }
            }
            if ![
                "=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN",
            ]
            .contains(&op.as_str())
            {
                return Err(bad(text, &format!("unknown comparator {op:?}")));
            }
            let value = if op.ends_with("IN") {
                let (list, next) = parse_list(&toks, i, text)?;
                i = next;
                Value::List(list)
            } else {
                let v = literal(toks.get(i), text)?;
                i += 1;
                v
            };
            clauses.push(Clause { ident, op, value });
        }
        Ok(Self { clauses })
    }

    /// Whether every clause holds for the attributes `get` returns.
    pub fn matches(&self, get: impl Fn(&Ident) -> Option<Value>) -> bool {
        self.clauses.iter().all(|c| {
            let Some(have) = get(&c.ident) else {
                return false;
            };
            compare(&have, &c.op, &c.value)
        })
    }
}

fn bad(text: &str, why: &str) -> MlError {
    MlError::invalid(format!("invalid filter {text:?}: {why}"))
}

fn ident(w: &str) -> Ident {
    for kind in [
        "tags",
        "tag",
        "params",
        "param",
        "metrics",
        "metric",
        "attributes",
        "attribute",
        "attr",
    ] {
        if let Some(key) = w.strip_prefix(kind).and_then(|r| r.strip_prefix('.')) {
            let kind = match kind {
                "tag" | "tags" => "tags",
                "param" | "params" => "params",
                "metric" | "metrics" => "metrics",
                _ => "attributes",
            };
            let key = key.trim_matches(|c| c == '`' || c == '"');
            return Ident {
                kind: kind.into(),
                key: key.into(),
            };
        }
    }
    Ident {
        kind: "attributes".into(),
        key: w.into(),
    }
}

fn literal(t: Option<&Tok>, text: &str) -> Result<Value, MlError> {
    match t {
        Some(Tok::Quoted(s, '\'')) | Some(Tok::Quoted(s, '"')) => Ok(Value::Str(s.clone())),
        Some(Tok::Word(w)) => w
            .parse::<f64>()
            .map(Value::Num)
            .map_err(|_| bad(text, &format!("{w:?} is not a quoted string or a number"))),
        t => Err(bad(text, &format!("expected a value, found {t:?}"))),
    }
}

fn parse_list(toks: &[Tok], mut i: usize, text: &str) -> Result<(Vec<Value>, usize), MlError> {
    if toks.get(i) != Some(&Tok::Op("(".into())) {
        return Err(bad(text, "IN takes a parenthesised list"));
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        out.push(literal(toks.get(i), text)?);
        i += 1;
        match toks.get(i) {
            Some(Tok::Op(o)) if o == "," => i += 1,
            Some(Tok::Op(o)) if o == ")" => return Ok((out, i + 1)),
            t => return Err(bad(text, &format!("expected , or ), found {t:?}"))),
        }
    }
}

fn compare(have: &Value, op: &str, want: &Value) -> bool {
    match (have, want) {
        (_, Value::List(l)) => {
            let found = l.iter().any(|w| compare(have, "=", w));
            if op == "IN" { found } else { !found }
        }
        (Value::Num(a), Value::Num(b)) => ordered(a, b, op).unwrap_or(false),
        (Value::Str(a), Value::Num(b)) => a
            .parse::<f64>()
            .is_ok_and(|a| compare(&Value::Num(a), op, &Value::Num(*b))),
        (Value::Num(a), Value::Str(b)) => {
            let a = if a.fract() == 0.0 {
                format!("{}", *a as i64)
            } else {
                a.to_string()
            };
            compare(&Value::Str(a), op, &Value::Str(b.clone()))
        }
        (Value::Str(a), Value::Str(b)) => match op {
            "LIKE" => like(a, b),
            "ILIKE" => like(&a.to_lowercase(), &b.to_lowercase()),
            _ => ordered(a, b, op).unwrap_or(false),
        },
        (Value::List(_), _) => false,
    }
}

/// `a op b` for the comparators every type has; `None` for any other.
fn ordered<T: PartialOrd + ?Sized>(a: &T, b: &T, op: &str) -> Option<bool> {
    Some(match op {
        "=" => a == b,
        "!=" => a != b,
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        ">=" => a >= b,
        _ => return None,
    })
}

/// SQL `LIKE`: `%` any run, `_` one character.
pub fn like(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matcher with backtracking to the last `%`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && (p[j] == '_' || p[j] == s[i]) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    while j < p.len() && p[j] == '%' {
        j += 1;
    }
    j == p.len()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String, char),
    Op(String),
}

fn tokenize(text: &str) -> Result<Vec<Tok>, MlError> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' || ch == '"' || ch == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err(bad(text, "an unterminated quote")),
                    Some(&q) if q == ch && c.get(i + 1) == Some(&ch) => {
                        s.push(ch);
                        i += 2;
                    }
                    Some(&q) if q == ch => {
                        i += 1;
                        break;
                    }
                    Some(&o) => {
                        s.push(o);
                        i += 1;
                    }
                }
            }
            // `tags.`key``: a quoted key glued to the kind before it.
            if (ch == '`' || ch == '"')
                && let Some(Tok::Word(w)) = out.last_mut()
                && w.ends_with('.')
            {
                w.push_str(&s);
                continue;
            }
            out.push(Tok::Quoted(s, ch));
        } else if "=!<>".contains(ch) {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            if ["!=", "<=", ">=", "=="].contains(&two.as_str()) {
                out.push(Tok::Op(if two == "==" { "=".into() } else { two }));
                i += 2;
            } else if ch == '!' {
                return Err(bad(text, "'!' must be followed by '='"));
            } else {
                out.push(Tok::Op(ch.to_string()));
                i += 1;
            }
        } else if ch == '(' || ch == ')' || ch == ',' {
            out.push(Tok::Op(ch.to_string()));
            i += 1;
        } else {
            let start = i;
            while i < c.len() && !c[i].is_whitespace() && !"=!<>(),'\"`".contains(c[i]) {
                i += 1;
            }
            out.push(Tok::Word(c[start..i].iter().collect()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(id: &Ident) -> Option<Value> {
        match (id.kind.as_str(), id.key.as_str()) {
            ("attributes", "name") => Some(Value::Str("clinic".into())),
            ("attributes", "version_number") => Some(Value::Num(3.0)),
            ("tags", "team") => Some(Value::Str("ML-ops".into())),
            ("tags", "a.b") => Some(Value::Str("x".into())),
            _ => None,
        }
    }

    #[test]
    fn clauses_parse_and_match_as_mlflow_documents_them() {
        let ok = |f: &str| Filter::parse(f).unwrap().matches(attrs);
        assert!(ok("name = 'clinic'"));
        assert!(ok("name='clinic' AND version_number >= 2"));
        assert!(!ok("name = 'clinic' and version_number > 3"));
        assert!(ok("tags.team LIKE 'ML%'"));
        assert!(!ok("tags.team LIKE 'ml%'"));
        assert!(ok("tags.team ILIKE 'ml%'"));
        assert!(ok("tags.`a.b` = 'x'"));
        assert!(ok("name IN ('a', 'clinic')"));
        assert!(ok("name NOT IN ('a', 'b')"));
        assert!(ok("version_number = '3'"));
        assert!(!ok("tags.missing = 'x'"));
        assert!(ok(""));
    }

    #[test]
    fn a_broken_filter_is_refused_naming_the_problem() {
        for (f, why) in [
            ("name = ", "expected a value"),
            ("name ~ 'x'", "comparator"),
            ("name = 'x' OR name = 'y'", "expected AND"),
            ("name = 'x", "unterminated"),
            ("name IN 'x'", "parenthesised"),
            ("name = clinic", "not a quoted string"),
        ] {
            let e = Filter::parse(f).unwrap_err();
            assert_eq!(e.code, "INVALID_PARAMETER_VALUE");
            assert!(e.message.contains(why), "{f}: {}", e.message);
        }
    }

    #[test]
    fn like_handles_runs_and_single_characters() {
        assert!(like("clinic-v2", "clinic%"));
        assert!(like("clinic-v2", "%v_"));
        assert!(!like("clinic", "c_inic_"));
        assert!(like("", "%"));
        assert!(like("a%b", "a%b"));
    }
}
