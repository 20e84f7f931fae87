//! Filter expressions over document attributes: the syntax tree and its parser.
//!
//! ```text
//! expr       := or
//! or         := and ( OR and )*
//! and        := unary ( AND unary )*
//! unary      := NOT unary | '(' expr ')' | comparison
//! comparison := NAME op value | NAME IN '(' value ( ',' value )* ')' | NAME NOT IN '(' … ')'
//! op         := '=' | '==' | '!=' | '<' | '<=' | '>' | '>='
//! value      := "string" | 'string' | integer
//! ```
//!
//! Keywords are case-insensitive; names are `[A-Za-z_][A-Za-z0-9_.-]*`. Strings take `\"`, `\'`
//! and `\\` escapes. Errors name the column (1-based, in characters) and what was expected.

use std::fmt;

/// Deepest nesting of parentheses and `NOT`s accepted (keeps the parser's recursion bounded).
pub const MAX_DEPTH: usize = 64;

/// A literal compared with an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string.
    Str(String),
    /// A signed 64-bit integer.
    Int(i64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(i) => write!(f, "{i}"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`: the attribute equals (or, for a list, contains) the value.
    Eq,
    /// `!=`: not `=` (documents without the attribute match).
    Ne,
    /// `<` (integers).
    Lt,
    /// `<=` (integers).
    Le,
    /// `>` (integers).
    Gt,
    /// `>=` (integers).
    Ge,
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        })
    }
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `name op value`.
    Compare {
        /// The attribute.
        name: String,
        /// The operator.
        op: CmpOp,
        /// The literal.
        value: Value,
    },
    /// `name IN (v1, v2, …)`: equal to (or containing) any of the values.
    In {
        /// The attribute.
        name: String,
        /// The literals (at least one).
        values: Vec<Value>,
    },
    /// Documents the inner expression does not match.
    Not(Box<Expr>),
    /// Documents every part matches.
    And(Vec<Expr>),
    /// Documents any part matches.
    Or(Vec<Expr>),
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based character position of the fault (one past the end for a truncated expression).
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Str(String),
    Int(i64),
    Op(CmpOp),
    And,
    Or,
    Not,
    In,
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Name(n) => write!(f, "name `{n}`"),
            Token::Str(s) => write!(f, "string {s:?}"),
            Token::Int(i) => write!(f, "integer {i}"),
            Token::Op(op) => write!(f, "`{op}`"),
            Token::And => f.write_str("AND"),
            Token::Or => f.write_str("OR"),
            Token::Not => f.write_str("NOT"),
            Token::In => f.write_str("IN"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
            Token::Comma => f.write_str("`,`"),
        }
    }
}

fn error(column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column,
        message: message.into(),
    }
}

/// Splits `text` into tokens with their 1-based columns.
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let (token, width) = match (c, two.as_str()) {
            (_, "==") => (Token::Op(CmpOp::Eq), 2),
            (_, "!=") => (Token::Op(CmpOp::Ne), 2),
            (_, "<=") => (Token::Op(CmpOp::Le), 2),
            (_, ">=") => (Token::Op(CmpOp::Ge), 2),
            ('=', _) => (Token::Op(CmpOp::Eq), 1),
            ('<', _) => (Token::Op(CmpOp::Lt), 1),
            ('>', _) => (Token::Op(CmpOp::Gt), 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            (',', _) => (Token::Comma, 1),
            ('"' | '\'', _) => {
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(error(column, "string is not closed")),
                        Some(&q) if q == c => break,
                        Some('\\') => match chars.get(j + 1) {
                            Some(&e @ ('"' | '\'' | '\\')) => {
                                value.push(e);
                                j += 2;
                            }
                            _ => {
                                return Err(error(
                                    j + 1,
                                    "unknown escape (only \\\", \\' and \\\\ are allowed)",
                                ))
                            }
                        },
                        Some(&other) => {
                            value.push(other);
                            j += 1;
                        }
                    }
                }
                (Token::Str(value), j + 1 - i)
            }
            _ if c == '-' || c.is_ascii_digit() => {
                let mut j = i + 1;
                while chars.get(j).is_some_and(|d| d.is_ascii_digit()) {
                    j += 1;
                }
                let literal: String = chars[i..j].iter().collect();
                if chars.get(j).is_some_and(|d| is_name_char(*d)) {
                    return Err(error(column, format!("`{literal}…` is not an integer")));
                }
                let value = literal
                    .parse::<i64>()
                    .map_err(|_| error(column, format!("`{literal}` is not a 64-bit integer")))?;
                (Token::Int(value), j - i)
            }
            _ if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while chars.get(j).is_some_and(|d| is_name_char(*d)) {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                let token = match word.to_ascii_uppercase().as_str() {
                    "AND" => Token::And,
                    "OR" => Token::Or,
                    "NOT" => Token::Not,
                    "IN" => Token::In,
                    _ => Token::Name(word),
                };
                (token, j - i)
            }
            _ => return Err(error(column, format!("unexpected character {c:?}"))),
        };
        tokens.push((token, column));
        i += width;
    }
    Ok(tokens)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.end_column, |(_, c)| *c)
    }

    fn found(&self) -> String {
        self.peek().map_or_else(
            || "the end of the expression".to_string(),
            |t| t.to_string(),
        )
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).map(|(t, _)| t.clone());
        self.at += 1;
        token
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(&token) {
            self.at += 1;
            Ok(())
        } else {
            Err(error(
                self.column(),
                format!("expected {what}, found {}", self.found()),
            ))
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.and(depth)?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut parts = vec![self.unary(depth)?];
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            parts.push(self.unary(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(error(
                self.column(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        match self.peek() {
            Some(Token::Not) => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Token::Open) => {
                self.at += 1;
                let inner = self.or(depth + 1)?;
                self.expect(Token::Close, "`)`")?;
                Ok(inner)
            }
            Some(Token::Name(_)) => self.comparison(),
            _ => Err(error(
                self.column(),
                format!(
                    "expected an attribute name, NOT or `(`, found {}",
                    self.found()
                ),
            )),
        }
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let Some(Token::Name(name)) = self.next() else {
            return Err(error(self.column(), "expected an attribute name"));
        };
        match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.at += 1;
                let value = self.value()?;
                Ok(Expr::Compare { name, op, value })
            }
            Some(Token::In) => {
                self.at += 1;
                let values = self.list()?;
                Ok(Expr::In { name, values })
            }
            Some(Token::Not) if self.tokens.get(self.at + 1).map(|t| &t.0) == Some(&Token::In) => {
                self.at += 2;
                let values = self.list()?;
                Ok(Expr::Not(Box::new(Expr::In { name, values })))
            }
            _ => Err(error(
                self.column(),
                format!(
                    "expected a comparison (=, !=, <, <=, >, >=) or IN after `{name}`, found {}",
                    self.found()
                ),
            )),
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        let column = self.column();
        match self.next() {
            Some(Token::Str(s)) => Ok(Value::Str(s)),
            Some(Token::Int(i)) => Ok(Value::Int(i)),
            Some(Token::Name(n)) => Err(error(
                column,
                format!("expected a value, found name `{n}` (quote strings: \"{n}\")"),
            )),
            other => Err(error(
                column,
                format!(
                    "expected a value (a quoted string or an integer), found {}",
                    other.map_or_else(
                        || "the end of the expression".to_string(),
                        |t| t.to_string()
                    )
                ),
            )),
        }
    }

    fn list(&mut self) -> Result<Vec<Value>, ParseError> {
        self.expect(Token::Open, "`(` to open the IN list")?;
        let mut values = vec![self.value()?];
        while self.peek() == Some(&Token::Comma) {
            self.at += 1;
            values.push(self.value()?);
        }
        self.expect(Token::Close, "`,` or `)` in the IN list")?;
        Ok(values)
    }
}

/// Parses a filter expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(error(1, "the expression is empty"));
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        end_column: text.chars().count() + 1,
    };
    let expr = parser.or(0)?;
    if parser.at < parser.tokens.len() {
        return Err(error(
            parser.column(),
            format!("expected AND, OR or the end, found {}", parser.found()),
        ));
    }
    Ok(expr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(name: &str, op: CmpOp, value: Value) -> Expr {
        Expr::Compare {
            name: name.into(),
            op,
            value,
        }
    }

    #[test]
    fn parses_precedence_lists_and_keywords_in_any_case() {
        let e = parse(r#"lang = "en" and year >= 2018 OR NOT tags in ('a', "b\"c") "#).unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                Expr::And(vec![
                    cmp("lang", CmpOp::Eq, Value::Str("en".into())),
                    cmp("year", CmpOp::Ge, Value::Int(2018)),
                ]),
                Expr::Not(Box::new(Expr::In {
                    name: "tags".into(),
                    values: vec![Value::Str("a".into()), Value::Str("b\"c".into())],
                })),
            ])
        );
        let e = parse("(a.b == -3 OR c != 'x') AND d NOT IN (1,2)").unwrap();
        assert_eq!(
            e,
            Expr::And(vec![
                Expr::Or(vec![
                    cmp("a.b", CmpOp::Eq, Value::Int(-3)),
                    cmp("c", CmpOp::Ne, Value::Str("x".into())),
                ]),
                Expr::Not(Box::new(Expr::In {
                    name: "d".into(),
                    values: vec![Value::Int(1), Value::Int(2)],
                })),
            ])
        );
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let cases = [
            ("", 1, "empty"),
            ("lang =", 7, "expected a value"),
            ("lang = en", 8, "quote strings"),
            ("lang \"en\"", 6, "expected a comparison"),
            ("(lang = 'en'", 13, "expected `)`"),
            ("lang = 'en", 8, "not closed"),
            ("year > 99999999999999999999", 8, "not a 64-bit integer"),
            ("year > 12ab", 8, "not an integer"),
            ("a = 1 b = 2", 7, "expected AND, OR or the end"),
            ("a in (1 2)", 9, "`,` or `)`"),
            ("a = 1 AND", 10, "expected an attribute name"),
            ("a ~ 1", 3, "unexpected character"),
            ("a = 'x\\n'", 7, "unknown escape"),
        ];
        for (text, column, expected) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.column, column, "{text}: {e}");
            assert!(e.message.contains(expected), "{text}: {e}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep)
            .unwrap_err()
            .message
            .contains("nested more than"));
        let nots = format!("{}a = 1", "NOT ".repeat(100));
        assert!(parse(&nots)
            .unwrap_err()
            .message
            .contains("nested more than"));
    }
}
