//! Billable-metric expressions: a small language that computes a per-event value (for example
//! `round(event.properties.usage.bytes / 1024, 2)`) in exact decimal arithmetic.
//!
//! # Language
//!
//! * Binary `+ - * /`. `*` and `/` bind tighter than `+` and `-`; all four are left-associative.
//!   Parentheses and unary minus (`-x`, `2 - -3`) are supported. There is no unary plus.
//! * Decimal literals: `12`, `3.5`, `0.5`. A literal must start with a digit: `.5` and `5.` are
//!   rejected, and so are exponents (`1e3`). A literal that cannot be held exactly in a
//!   [`Decimal`] (more than 28 decimal places, or above about 7.9e28) is rejected rather than
//!   rounded.
//! * String literals in single quotes; a doubled quote is a literal quote: `'it''s'`.
//! * `event.code` (string), `event.timestamp` (Unix seconds as a decimal with up to 6 fractional
//!   digits) and `event.properties.<key>`, where the key may be a dotted path into nested objects
//!   (`event.properties.usage.bytes`). Path segments are identifiers `[A-Za-z_][A-Za-z0-9_]*`, or
//!   the bracket form `['weird-key']` for other keys. A bracket key may not be empty or contain a
//!   `.`, because properties are looked up by a dotted path ([`EventView::property`]) and such a
//!   key could not be told apart from a nested path. Identifiers are case-sensitive; whitespace
//!   between the parts of a path is allowed.
//! * Functions (names are case-insensitive): `round(x[, d])`, `ceil(x[, d])`, `floor(x[, d])`,
//!   where `d` is a whole number of decimal places from -28 to 28 (negative rounds to tens,
//!   hundreds, ...; `round` rounds half away from zero); `least(a, ...)`, `greatest(a, ...)` and
//!   `concat(a, ...)`, each taking at least one argument. Argument counts, and a literal `d`, are
//!   checked when parsing.
//!
//! # Values
//!
//! A value is an exact [`Decimal`] or a string ([`ExprValue`]). Arithmetic, rounding and
//! `least`/`greatest` accept a string that holds a decimal number (`"12.5"`, `"-3"`, `"1e3"`; see
//! [`json_to_decimal`]) and fail with [`EvalError::NotANumber`] on any other string. `concat`
//! renders numbers in their normalized form (`1.50` becomes `1.5`).
//!
//! Sums, differences and products are exact as long as they fit; overflow is an error, never a
//! panic. A quotient that does not terminate (`1 / 3`) is rounded to the 28 significant digits a
//! [`Decimal`] holds, as is a product whose exact result needs more than 28 decimal places.
//! Nothing is ever computed in floating point.
//!
//! A property that is absent or JSON `null` makes evaluation fail with
//! [`EvalError::MissingProperty`]; the engine skips such an event. A property holding a JSON
//! boolean, object or array cannot be used at all ([`EvalError::TypeMismatch`]).
//!
//! # Limits
//!
//! Sources longer than [`MAX_SOURCE_CHARS`] characters, nesting of parentheses, unary minus and
//! calls deeper than [`MAX_NESTING_DEPTH`], and trees taller than [`MAX_TREE_HEIGHT`] are parse
//! errors, so no input can overflow the stack.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// Longest accepted source text, in characters.
pub const MAX_SOURCE_CHARS: usize = 4096;

/// Deepest accepted nesting of parentheses, unary minus and function calls. The parser is
/// recursive, so this keeps hostile input from overflowing the stack.
pub const MAX_NESTING_DEPTH: usize = 64;

/// Tallest accepted syntax tree (a literal or reference is 1, each operator or call adds 1).
/// Evaluation, printing and the derived `Clone`/`PartialEq`/`Debug`/`Drop` all recurse through
/// the tree, and a flat chain like `1 + 1 + ... + 1` is as tall as it is long without any
/// nesting, so the nesting limit alone does not bound them. 128 leaves ample room on a 2 MiB
/// thread stack even in debug builds.
pub const MAX_TREE_HEIGHT: usize = 128;

/// `Decimal` holds at most 28 decimal places, so rounding to more (or to more than 28 places left
/// of the point, which would always overflow or give zero) is never meaningful.
const MAX_DECIMAL_PLACES: i32 = 28;

/// How many characters of an offending string value an error message quotes.
const ERROR_VALUE_PREVIEW_CHARS: usize = 40;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// What an expression can read of an event.
pub trait EventView {
    /// The event code.
    fn code(&self) -> &str;
    /// Microseconds since the Unix epoch (UTC).
    fn timestamp_micros(&self) -> i64;
    /// A property by dotted path (`"usage.bytes"`); `None` when absent.
    fn property(&self, path: &str) -> Option<&Value>;
}

/// The value of an expression or sub-expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprValue {
    Decimal(Decimal),
    String(String),
}

impl fmt::Display for ExprValue {
    /// Numbers in normalized form (as `concat` renders them), strings as they are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExprValue::Decimal(d) => write!(f, "{}", d.normalize()),
            ExprValue::String(s) => f.write_str(s),
        }
    }
}

/// Why a source text is not a valid expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct ParseError {
    /// 0-based character (not byte) offset into the source.
    pub position: usize,
    pub message: String,
}

impl ParseError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        ParseError { position, message: message.into() }
    }
}

/// Why an expression could not be evaluated for one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The property is absent or JSON `null`.
    #[error("missing property '{path}'")]
    MissingProperty { path: String },
    /// The property holds a JSON boolean, object or array (`found` is e.g. "a boolean").
    #[error("property '{path}' is {found}, expected a number or a string")]
    TypeMismatch { path: String, found: &'static str },
    /// The property is a JSON number too large or too precise for a `Decimal`.
    #[error("property '{path}' holds a number that does not fit in a decimal")]
    NumberOutOfRange { path: String },
    /// A string that does not hold a decimal number was used as a number. `value` is the string,
    /// shortened to its first 40 characters.
    #[error("'{value}' is not a number")]
    NotANumber { value: String },
    #[error("division by zero")]
    DivisionByZero,
    /// A result does not fit in a `Decimal`.
    #[error("arithmetic overflow")]
    Overflow,
    /// The decimal places argument of `round`, `ceil` or `floor` is not a whole number from -28
    /// to 28.
    #[error("decimal places for {function} must be an integer from -28 to 28, got {value}")]
    InvalidDecimalPlaces { function: &'static str, value: String },
}

/// A parsed, validated expression.
///
/// Equality is structural: two expressions are equal when they parse to the same tree, whatever
/// their whitespace, redundant parentheses or function-name case. `Display` prints a canonical
/// form that parses back to an equal expression (provided it is within `MAX_SOURCE_CHARS`:
/// the canonical spacing can make a source near the limit longer).
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    root: Node,
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Expression {
    /// Parses and validates `source`.
    pub fn parse(source: &str) -> Result<Expression, ParseError> {
        let chars: Vec<char> = source.chars().collect();
        if chars.len() > MAX_SOURCE_CHARS {
            return Err(ParseError::new(
                MAX_SOURCE_CHARS,
                format!(
                    "expression is too long ({} characters, at most {MAX_SOURCE_CHARS})",
                    chars.len()
                ),
            ));
        }
        let tokens = lex(&chars)?;
        if tokens.is_empty() {
            return Err(ParseError::new(0, "empty expression"));
        }
        let mut parser = Parser::new(tokens, chars.len());
        let root = parser.parse_expr(ADDITIVE)?.node;
        let trailing = parser.peek();
        if trailing.tok != Tok::End {
            return Err(ParseError::new(
                trailing.pos,
                format!("unexpected {}", trailing.tok.describe()),
            ));
        }
        Ok(Expression { source: source.to_owned(), root })
    }

    /// The original source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The property paths the expression reads (e.g. `["usage.bytes", "region"]`),
    /// deduplicated, in order of first use.
    pub fn property_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        self.root.collect_paths(&mut paths);
        paths
    }

    /// Evaluates the expression against one event.
    pub fn evaluate(&self, event: &dyn EventView) -> Result<ExprValue, EvalError> {
        Ok(match eval(&self.root, event)? {
            // `-0` is a distinct bit pattern in `Decimal`; callers should never see it.
            ExprValue::Decimal(d) if d.is_zero() => ExprValue::Decimal(d.abs()),
            other => other,
        })
    }

    /// Evaluates the expression and requires a number; a string result holding a decimal is
    /// converted.
    pub fn evaluate_decimal(&self, event: &dyn EventView) -> Result<Decimal, EvalError> {
        to_decimal(self.evaluate(event)?)
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl FromStr for Expression {
    type Err = ParseError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        Expression::parse(source)
    }
}

/// Stored as its original source text, so a definition reads back exactly as it was written.
impl serde::Serialize for Expression {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Expression {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Expression::parse(&source).map_err(serde::de::Error::custom)
    }
}

/// A JSON number, or a string holding a decimal number, as an exact `Decimal`.
///
/// Accepted text is `-?digits(.digits)?([eE][+-]?digits)?` with nothing around it (so `" 4 "` and
/// `"+4"` are rejected). `None` for anything else, including `null`, booleans, objects, arrays and
/// numbers that a `Decimal` cannot hold exactly. Never goes through `f64`: with serde_json's
/// `arbitrary_precision` feature a number's text is its original digits.
pub fn json_to_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => parse_decimal_str(&n.to_string()),
        Value::String(s) => parse_decimal_str(s),
        _ => None,
    }
}

/// Looks up a dotted path (`"usage.bytes"`) in a JSON object of event properties; `None` when any
/// segment is absent or a non-final segment is not an object. A ready-made body for
/// [`EventView::property`].
pub fn property_at_path<'a>(properties: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(properties, |value, key| value.as_object()?.get(key))
}

// ---------------------------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn precedence(self) -> u8 {
        match self {
            BinaryOp::Add | BinaryOp::Sub => ADDITIVE,
            BinaryOp::Mul | BinaryOp::Div => MULTIPLICATIVE,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
        }
    }
}

const ADDITIVE: u8 = 1;
const MULTIPLICATIVE: u8 = 2;
/// Literals, references, calls and unary minus: never need parentheses as an operand.
const ATOM: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundMode {
    Round,
    Ceil,
    Floor,
}

impl RoundMode {
    fn name(self) -> &'static str {
        match self {
            RoundMode::Round => "round",
            RoundMode::Ceil => "ceil",
            RoundMode::Floor => "floor",
        }
    }

    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundMode::Round => RoundingStrategy::MidpointAwayFromZero,
            RoundMode::Ceil => RoundingStrategy::ToPositiveInfinity,
            RoundMode::Floor => RoundingStrategy::ToNegativeInfinity,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extremum {
    Least,
    Greatest,
}

impl Extremum {
    fn name(self) -> &'static str {
        match self {
            Extremum::Least => "least",
            Extremum::Greatest => "greatest",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Round(RoundMode),
    Extremum(Extremum),
    Concat,
}

impl Function {
    fn from_name(name: &str) -> Option<Function> {
        Some(match name.to_ascii_lowercase().as_str() {
            "round" => Function::Round(RoundMode::Round),
            "ceil" => Function::Round(RoundMode::Ceil),
            "floor" => Function::Round(RoundMode::Floor),
            "least" => Function::Extremum(Extremum::Least),
            "greatest" => Function::Extremum(Extremum::Greatest),
            "concat" => Function::Concat,
            _ => return None,
        })
    }
}

/// A property reference. Keeps the segments (to print bracket keys back) and the dotted path
/// (to look the value up without rebuilding it for every event).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PropertyPath {
    segments: Vec<String>,
    dotted: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Always non-negative: `-1` parses as `Neg(Number(1))`, which keeps printing unambiguous.
    Number(Decimal),
    Text(String),
    EventCode,
    EventTimestamp,
    Property(PropertyPath),
    Neg(Box<Node>),
    Binary {
        op: BinaryOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    Round {
        mode: RoundMode,
        value: Box<Node>,
        places: Option<Box<Node>>,
    },
    // `first` is separate so that "at least one argument" holds by construction.
    Extremum {
        kind: Extremum,
        first: Box<Node>,
        rest: Vec<Node>,
    },
    Concat(Vec<Node>),
}

impl Node {
    fn precedence(&self) -> u8 {
        match self {
            Node::Binary { op, .. } => op.precedence(),
            _ => ATOM,
        }
    }

    fn collect_paths(&self, paths: &mut Vec<String>) {
        match self {
            Node::Number(_) | Node::Text(_) | Node::EventCode | Node::EventTimestamp => {}
            Node::Property(p) => {
                if !paths.contains(&p.dotted) {
                    paths.push(p.dotted.clone());
                }
            }
            Node::Neg(inner) => inner.collect_paths(paths),
            Node::Binary { lhs, rhs, .. } => {
                lhs.collect_paths(paths);
                rhs.collect_paths(paths);
            }
            Node::Round { value, places, .. } => {
                value.collect_paths(paths);
                if let Some(places) = places {
                    places.collect_paths(paths);
                }
            }
            Node::Extremum { first, rest, .. } => {
                first.collect_paths(paths);
                rest.iter().for_each(|n| n.collect_paths(paths));
            }
            Node::Concat(args) => args.iter().for_each(|n| n.collect_paths(paths)),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn write_string_literal(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    write!(f, "'{}'", s.replace('\'', "''"))
}

fn write_args<'a>(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    args: impl Iterator<Item = &'a Node>,
) -> fmt::Result {
    write!(f, "{name}(")?;
    for (i, arg) in args.enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{arg}")?;
    }
    f.write_str(")")
}

/// The canonical form: single spaces around binary operators, lowercase function names, only the
/// parentheses the tree needs, normalized numbers and identifier keys in dotted form.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Number(d) => write!(f, "{}", d.normalize()),
            Node::Text(s) => write_string_literal(f, s),
            Node::EventCode => f.write_str("event.code"),
            Node::EventTimestamp => f.write_str("event.timestamp"),
            Node::Property(p) => {
                f.write_str("event.properties")?;
                for segment in &p.segments {
                    if is_identifier(segment) {
                        write!(f, ".{segment}")?;
                    } else {
                        f.write_str("[")?;
                        write_string_literal(f, segment)?;
                        f.write_str("]")?;
                    }
                }
                Ok(())
            }
            // `--1`, not `-(-1)`: parentheses would add a nesting level per minus, and the
            // printed form of an expression near the nesting limit would not parse back
            // (found by the `expression` fuzz target).
            Node::Neg(inner) => match **inner {
                Node::Binary { .. } => write!(f, "-({inner})"),
                _ => write!(f, "-{inner}"),
            },
            Node::Binary { op, lhs, rhs } => {
                // Left-associative: an operand of equal precedence needs parentheses only on the
                // right (`1 - (2 - 3)`), which also keeps `a + (b + c)` a distinct tree.
                if lhs.precedence() < op.precedence() {
                    write!(f, "({lhs})")?;
                } else {
                    write!(f, "{lhs}")?;
                }
                write!(f, " {} ", op.symbol())?;
                if rhs.precedence() <= op.precedence() {
                    write!(f, "({rhs})")
                } else {
                    write!(f, "{rhs}")
                }
            }
            Node::Round { mode, value, places } => {
                write_args(f, mode.name(), std::iter::once(&**value).chain(places.as_deref()))
            }
            Node::Extremum { kind, first, rest } => {
                write_args(f, kind.name(), std::iter::once(&**first).chain(rest))
            }
            Node::Concat(args) => write_args(f, "concat", args.iter()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Keeps the text for error messages.
    Number {
        value: Decimal,
        text: String,
    },
    Str(String),
    Ident(String),
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        let quoted = |s: &str| format!("'{s}'");
        match self {
            Tok::Number { text, .. } => quoted(text),
            Tok::Str(_) => "string literal".to_owned(),
            Tok::Ident(name) => quoted(name),
            Tok::Plus => quoted("+"),
            Tok::Minus => quoted("-"),
            Tok::Star => quoted("*"),
            Tok::Slash => quoted("/"),
            Tok::LParen => quoted("("),
            Tok::RParen => quoted(")"),
            Tok::LBracket => quoted("["),
            Tok::RBracket => quoted("]"),
            Tok::Comma => quoted(","),
            Tok::Dot => quoted("."),
            Tok::End => "end of expression".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    /// 0-based character offset of the token's first character.
    pos: usize,
}

/// Splits the source into tokens. Positions are character offsets, so messages point at the
/// right place in sources with non-ASCII strings.
fn lex(chars: &[char]) -> Result<Vec<Token>, ParseError> {
    let at = |i: usize| chars.get(i).copied();
    let is_ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        i += 1;
        let tok = match c {
            c if c.is_whitespace() => continue,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '*' => Tok::Star,
            '/' => Tok::Slash,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '0'..='9' => {
                while at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                if at(i) == Some('.') {
                    i += 1;
                    if !at(i).is_some_and(|c| c.is_ascii_digit()) {
                        return Err(ParseError::new(
                            i,
                            "expected a digit after '.' in number literal",
                        ));
                    }
                    while at(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                }
                // `1e3` or `12abc` would otherwise lex as a number followed by an identifier
                // and produce a confusing "unexpected 'e3'".
                if at(i).is_some_and(is_ident_char) {
                    while at(i).is_some_and(is_ident_char) {
                        i += 1;
                    }
                    let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
                    return Err(ParseError::new(start, format!("invalid number literal '{text}'")));
                }
                let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
                let value = parse_decimal_str(&text).ok_or_else(|| {
                    ParseError::new(
                        start,
                        format!(
                            "number literal '{text}' cannot be represented exactly as a decimal"
                        ),
                    )
                })?;
                Tok::Number { value, text }
            }
            '\'' => {
                let mut s = String::new();
                loop {
                    match at(i) {
                        None => return Err(ParseError::new(start, "unterminated string literal")),
                        Some('\'') if at(i + 1) == Some('\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while at(i).is_some_and(is_ident_char) {
                    i += 1;
                }
                Tok::Ident(chars.get(start..i).unwrap_or_default().iter().collect())
            }
            other => return Err(ParseError::new(start, format!("unexpected character '{other}'"))),
        };
        tokens.push(Token { tok, pos: start });
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

/// A parsed sub-expression and the height of its tree, tracked while parsing so the
/// [`MAX_TREE_HEIGHT`] check never has to walk a tree that might already be too tall.
struct Parsed {
    node: Node,
    height: usize,
}

impl Parsed {
    fn leaf(node: Node) -> Self {
        Parsed { node, height: 1 }
    }
}

/// Recursive descent with precedence climbing for the binary operators.
struct Parser {
    tokens: Vec<Token>,
    index: usize,
    /// Returned by `peek` past the last token, so the parser never indexes out of bounds.
    end: Token,
    depth: usize,
}

impl Parser {
    fn new(tokens: Vec<Token>, source_chars: usize) -> Self {
        Parser { tokens, index: 0, end: Token { tok: Tok::End, pos: source_chars }, depth: 0 }
    }

    fn peek(&self) -> &Token {
        self.tokens.get(self.index).unwrap_or(&self.end)
    }

    fn peek_second(&self) -> &Token {
        self.tokens.get(self.index + 1).unwrap_or(&self.end)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.index < self.tokens.len() {
            self.index += 1;
        }
        token
    }

    fn enter(&mut self, pos: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err(ParseError::new(
                pos,
                format!("expression is nested too deeply (more than {MAX_NESTING_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A node over children of the given heights, unless that makes the tree too tall.
    fn branch(
        pos: usize,
        node: Node,
        child_heights: impl IntoIterator<Item = usize>,
    ) -> Result<Parsed, ParseError> {
        let height = 1 + child_heights.into_iter().max().unwrap_or(0);
        if height > MAX_TREE_HEIGHT {
            return Err(ParseError::new(
                pos,
                format!(
                    "expression is too complex (more than {MAX_TREE_HEIGHT} operations applied \
                     one after another)"
                ),
            ));
        }
        Ok(Parsed { node, height })
    }

    /// Parses operands joined by operators of at least `min_precedence`.
    fn parse_expr(&mut self, min_precedence: u8) -> Result<Parsed, ParseError> {
        let mut lhs = self.parse_unary()?;
        loop {
            let op = match self.peek().tok {
                Tok::Plus => BinaryOp::Add,
                Tok::Minus => BinaryOp::Sub,
                Tok::Star => BinaryOp::Mul,
                Tok::Slash => BinaryOp::Div,
                _ => break,
            };
            if op.precedence() < min_precedence {
                break;
            }
            let op_pos = self.next().pos;
            // `+ 1` makes the operators left-associative: the right operand only takes operators
            // that bind tighter.
            let rhs = self.parse_expr(op.precedence() + 1)?;
            let heights = [lhs.height, rhs.height];
            let node = Node::Binary { op, lhs: Box::new(lhs.node), rhs: Box::new(rhs.node) };
            lhs = Self::branch(op_pos, node, heights)?;
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self) -> Result<Parsed, ParseError> {
        if self.peek().tok != Tok::Minus {
            return self.parse_primary();
        }
        let minus = self.next();
        self.enter(minus.pos)?;
        let operand = self.parse_unary()?;
        self.leave();
        Self::branch(minus.pos, Node::Neg(Box::new(operand.node)), [operand.height])
    }

    fn parse_primary(&mut self) -> Result<Parsed, ParseError> {
        let token = self.peek().clone();
        match token.tok {
            Tok::Number { value, .. } => {
                self.next();
                Ok(Parsed::leaf(Node::Number(value)))
            }
            Tok::Str(s) => {
                self.next();
                Ok(Parsed::leaf(Node::Text(s)))
            }
            Tok::LParen => {
                self.next();
                self.enter(token.pos)?;
                let inner = self.parse_expr(ADDITIVE)?;
                self.expect(&Tok::RParen, "')'")?;
                self.leave();
                Ok(inner)
            }
            Tok::Ident(name) => {
                if self.peek_second().tok == Tok::LParen {
                    self.parse_call(&name, token.pos)
                } else if name == "event" {
                    self.next();
                    self.parse_event_field().map(Parsed::leaf)
                } else {
                    Err(ParseError::new(token.pos, format!("unknown identifier '{name}'")))
                }
            }
            Tok::Dot => match &self.peek_second().tok {
                Tok::Number { text, .. } => Err(ParseError::new(
                    token.pos,
                    format!("a number literal must start with a digit (write 0.{text})"),
                )),
                _ => Err(ParseError::new(token.pos, "unexpected '.'")),
            },
            other => Err(ParseError::new(token.pos, format!("unexpected {}", other.describe()))),
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), ParseError> {
        let token = self.next();
        if &token.tok == tok {
            Ok(())
        } else {
            Err(ParseError::new(
                token.pos,
                format!("expected {what}, found {}", token.tok.describe()),
            ))
        }
    }

    /// At `name (`; checks the name before parsing the arguments so an unknown function is
    /// reported at its name.
    fn parse_call(&mut self, name: &str, pos: usize) -> Result<Parsed, ParseError> {
        let function = Function::from_name(name)
            .ok_or_else(|| ParseError::new(pos, format!("unknown function '{name}'")))?;
        self.next(); // name
        self.next(); // (
        self.enter(pos)?;
        let mut args: Vec<(usize, Node)> = Vec::new();
        let mut tallest_arg = 0;
        if self.peek().tok == Tok::RParen {
            self.next();
        } else {
            loop {
                let arg_pos = self.peek().pos;
                let arg = self.parse_expr(ADDITIVE)?;
                tallest_arg = tallest_arg.max(arg.height);
                args.push((arg_pos, arg.node));
                let separator = self.next();
                match separator.tok {
                    Tok::Comma => {}
                    Tok::RParen => break,
                    other => {
                        return Err(ParseError::new(
                            separator.pos,
                            format!("expected ',' or ')', found {}", other.describe()),
                        ))
                    }
                }
            }
        }
        self.leave();

        let count = args.len();
        let mut args = args.into_iter();
        let node = match function {
            Function::Round(mode) => match (args.next(), args.next(), args.next()) {
                (Some((_, value)), places, None) => {
                    if let Some((places_pos, places)) = &places {
                        check_constant_places(mode, places, *places_pos)?;
                    }
                    Ok(Node::Round {
                        mode,
                        value: Box::new(value),
                        places: places.map(|(_, n)| Box::new(n)),
                    })
                }
                _ => Err(ParseError::new(
                    pos,
                    format!("expected 1 or 2 arguments to {}, got {count}", mode.name()),
                )),
            },
            Function::Extremum(kind) => match args.next() {
                Some((_, first)) => Ok(Node::Extremum {
                    kind,
                    first: Box::new(first),
                    rest: args.map(|(_, n)| n).collect(),
                }),
                None => Err(at_least_one(pos, kind.name())),
            },
            Function::Concat if count == 0 => Err(at_least_one(pos, "concat")),
            Function::Concat => Ok(Node::Concat(args.map(|(_, n)| n).collect())),
        }?;
        Self::branch(pos, node, [tallest_arg])
    }

    /// After `event`.
    fn parse_event_field(&mut self) -> Result<Node, ParseError> {
        self.expect(&Tok::Dot, "'.' after 'event'")?;
        let field = self.next();
        match field.tok {
            Tok::Ident(name) => match name.as_str() {
                "code" => Ok(Node::EventCode),
                "timestamp" => Ok(Node::EventTimestamp),
                "properties" => self.parse_property_path(),
                _ => Err(ParseError::new(
                    field.pos,
                    format!("unknown event field '{name}', expected code, timestamp or properties"),
                )),
            },
            other => Err(ParseError::new(
                field.pos,
                format!("expected an event field after 'event.', found {}", other.describe()),
            )),
        }
    }

    /// After `event.properties`: one or more `.key` or `['key']` segments.
    fn parse_property_path(&mut self) -> Result<Node, ParseError> {
        let mut segments = Vec::new();
        loop {
            match self.peek().tok {
                Tok::Dot => {
                    self.next();
                    let key = self.next();
                    match key.tok {
                        Tok::Ident(name) => segments.push(name),
                        other => {
                            return Err(ParseError::new(
                                key.pos,
                                format!(
                                    "expected a property key after '.', found {}",
                                    other.describe()
                                ),
                            ))
                        }
                    }
                }
                Tok::LBracket => {
                    self.next();
                    let key = self.next();
                    match key.tok {
                        Tok::Str(name) if name.is_empty() => {
                            return Err(ParseError::new(key.pos, "property key must not be empty"))
                        }
                        Tok::Str(name) if name.contains('.') => {
                            return Err(ParseError::new(
                                key.pos,
                                "property key must not contain '.'",
                            ))
                        }
                        Tok::Str(name) => segments.push(name),
                        other => {
                            return Err(ParseError::new(
                                key.pos,
                                format!(
                                    "expected a quoted property key after '[', found {}",
                                    other.describe()
                                ),
                            ))
                        }
                    }
                    self.expect(&Tok::RBracket, "']'")?;
                }
                _ => break,
            }
        }
        if segments.is_empty() {
            let found = self.peek();
            return Err(ParseError::new(
                found.pos,
                format!(
                    "expected a property key after 'event.properties', found {}",
                    found.tok.describe()
                ),
            ));
        }
        let dotted = segments.join(".");
        Ok(Node::Property(PropertyPath { segments, dotted }))
    }
}

fn at_least_one(pos: usize, name: &str) -> ParseError {
    ParseError::new(pos, format!("expected at least 1 argument to {name}, got 0"))
}

/// Rejects a literal (possibly negated) decimal places argument at parse time; anything computed
/// is checked when evaluated.
fn check_constant_places(mode: RoundMode, places: &Node, pos: usize) -> Result<(), ParseError> {
    let constant = match places {
        Node::Number(d) => *d,
        Node::Neg(inner) => match **inner {
            Node::Number(d) => -d,
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    decimal_places(mode, constant).map(|_| ()).map_err(|e| ParseError::new(pos, e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

fn eval(node: &Node, event: &dyn EventView) -> Result<ExprValue, EvalError> {
    Ok(match node {
        Node::Number(d) => ExprValue::Decimal(*d),
        Node::Text(s) => ExprValue::String(s.clone()),
        Node::EventCode => ExprValue::String(event.code().to_owned()),
        Node::EventTimestamp => {
            // Microseconds with scale 6 is exactly the seconds value; any i64 fits.
            let seconds =
                Decimal::try_new(event.timestamp_micros(), 6).map_err(|_| EvalError::Overflow)?;
            ExprValue::Decimal(seconds.normalize())
        }
        Node::Property(path) => read_property(event, path)?,
        Node::Neg(inner) => {
            let d = eval_decimal(inner, event)?;
            ExprValue::Decimal(if d.is_zero() { Decimal::ZERO } else { -d })
        }
        Node::Binary { op, lhs, rhs } => {
            let a = eval_decimal(lhs, event)?;
            let b = eval_decimal(rhs, event)?;
            ExprValue::Decimal(apply_binary(*op, a, b)?)
        }
        Node::Round { mode, value, places } => {
            let x = eval_decimal(value, event)?;
            let places = match places {
                Some(node) => decimal_places(*mode, eval_decimal(node, event)?)?,
                None => 0,
            };
            ExprValue::Decimal(round_to(x, places, *mode)?)
        }
        Node::Extremum { kind, first, rest } => {
            let mut best = eval_decimal(first, event)?;
            for node in rest {
                let candidate = eval_decimal(node, event)?;
                let better = match kind {
                    Extremum::Least => candidate < best,
                    Extremum::Greatest => candidate > best,
                };
                if better {
                    best = candidate;
                }
            }
            ExprValue::Decimal(best)
        }
        Node::Concat(args) => {
            let mut out = String::new();
            for node in args {
                match eval(node, event)? {
                    // `normalize` also turns `-0` into `0`.
                    ExprValue::Decimal(d) => out.push_str(&d.normalize().to_string()),
                    ExprValue::String(s) => out.push_str(&s),
                }
            }
            ExprValue::String(out)
        }
    })
}

fn eval_decimal(node: &Node, event: &dyn EventView) -> Result<Decimal, EvalError> {
    to_decimal(eval(node, event)?)
}

fn to_decimal(value: ExprValue) -> Result<Decimal, EvalError> {
    match value {
        ExprValue::Decimal(d) => Ok(d),
        ExprValue::String(s) => {
            parse_decimal_str(&s).ok_or_else(|| EvalError::NotANumber { value: preview(&s) })
        }
    }
}

fn preview(s: &str) -> String {
    if s.chars().count() <= ERROR_VALUE_PREVIEW_CHARS {
        s.to_owned()
    } else {
        let mut short: String = s.chars().take(ERROR_VALUE_PREVIEW_CHARS).collect();
        short.push('…');
        short
    }
}

fn read_property(event: &dyn EventView, path: &PropertyPath) -> Result<ExprValue, EvalError> {
    let path = &path.dotted;
    let type_mismatch = |found| EvalError::TypeMismatch { path: path.clone(), found };
    match event.property(path) {
        None | Some(Value::Null) => Err(EvalError::MissingProperty { path: path.clone() }),
        Some(v @ Value::Number(_)) => json_to_decimal(v)
            .map(ExprValue::Decimal)
            .ok_or_else(|| EvalError::NumberOutOfRange { path: path.clone() }),
        Some(Value::String(s)) => Ok(ExprValue::String(s.clone())),
        Some(Value::Bool(_)) => Err(type_mismatch("a boolean")),
        Some(Value::Array(_)) => Err(type_mismatch("an array")),
        Some(Value::Object(_)) => Err(type_mismatch("an object")),
    }
}

fn apply_binary(op: BinaryOp, a: Decimal, b: Decimal) -> Result<Decimal, EvalError> {
    let result = match op {
        BinaryOp::Add => a.checked_add(b),
        BinaryOp::Sub => a.checked_sub(b),
        BinaryOp::Mul => a.checked_mul(b),
        BinaryOp::Div if b.is_zero() => return Err(EvalError::DivisionByZero),
        BinaryOp::Div => a.checked_div(b),
    };
    result.ok_or(EvalError::Overflow)
}

/// The decimal places argument as an `i32` in `-28..=28`.
fn decimal_places(mode: RoundMode, d: Decimal) -> Result<i32, EvalError> {
    let invalid = || EvalError::InvalidDecimalPlaces {
        function: mode.name(),
        value: d.normalize().to_string(),
    };
    if !d.is_integer() {
        return Err(invalid());
    }
    // An integer normalizes to scale 0, so the mantissa is the value.
    let places = i32::try_from(d.normalize().mantissa()).map_err(|_| invalid())?;
    if (-MAX_DECIMAL_PLACES..=MAX_DECIMAL_PLACES).contains(&places) {
        Ok(places)
    } else {
        Err(invalid())
    }
}

/// Rounds `x` to `places` decimal places; a negative `places` rounds to a multiple of
/// `10^-places`.
fn round_to(x: Decimal, places: i32, mode: RoundMode) -> Result<Decimal, EvalError> {
    if let Ok(places) = u32::try_from(places) {
        return Ok(x.round_dp_with_strategy(places, mode.strategy()));
    }
    // rust_decimal only rounds to places right of the point, and dividing by 10^k first could
    // round twice, so round the integer mantissa directly: x = m / 10^s, and the result is
    // q * 10^k with q = m / 10^(s + k) rounded.
    let k = places.unsigned_abs();
    let m = x.mantissa();
    let (quotient, remainder, divisor) = match 10i128.checked_pow(x.scale() + k) {
        Some(p) => (m / p, m % p, Some(p)),
        // 10^(s+k) exceeds i128, so it is far above |m| < 2^96: the quotient is 0.
        None => (0, m, None),
    };
    let step = match mode {
        RoundMode::Round => {
            // Half away from zero: move when the remainder is at least half the divisor.
            let at_least_half = divisor.is_some_and(|p| {
                remainder.unsigned_abs().checked_mul(2).is_some_and(|r2| r2 >= p.unsigned_abs())
            });
            if at_least_half {
                remainder.signum()
            } else {
                0
            }
        }
        RoundMode::Ceil => i128::from(remainder > 0),
        RoundMode::Floor => -i128::from(remainder < 0),
    };
    let rounded = quotient.checked_add(step).ok_or(EvalError::Overflow)?;
    let unit = 10i128.checked_pow(k).ok_or(EvalError::Overflow)?;
    let rounded = Decimal::try_from_i128_with_scale(rounded, 0).map_err(|_| EvalError::Overflow)?;
    let unit = Decimal::try_from_i128_with_scale(unit, 0).map_err(|_| EvalError::Overflow)?;
    rounded.checked_mul(unit).ok_or(EvalError::Overflow)
}

/// Parses `-?digits(.digits)?([eE][+-]?digits)?` exactly; `None` when the text does not match or
/// the value needs more than 28 decimal places or a mantissa beyond 96 bits.
pub(crate) fn parse_decimal_str(s: &str) -> Option<Decimal> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let digits_from = |start: usize| {
        let len = bytes.get(start..)?.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            None
        } else {
            Some(len)
        }
    };

    let negative = bytes.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    let int_start = i;
    i += digits_from(i)?;
    let int_digits = s.get(int_start..i)?;
    let mut frac_digits = "";
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        i += digits_from(i)?;
        frac_digits = s.get(frac_start..i)?;
    }
    let mut exponent: i64 = 0;
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exponent_negative = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_start = i;
        i += digits_from(i)?;
        // An exponent too long for i64 only matters if the digits are non-zero, and then the
        // value is out of range either way; saturate and let the range checks below decide.
        let magnitude = s.get(exp_start..i)?.parse::<i64>().unwrap_or(i64::MAX);
        exponent = if exponent_negative { -magnitude } else { magnitude };
    }
    if i != bytes.len() {
        return None;
    }

    // value = digits * 10^power, with the fraction folded into the power.
    let all_digits = format!("{int_digits}{frac_digits}");
    let mut power = exponent.saturating_sub(i64::try_from(frac_digits.len()).ok()?);
    let significant = all_digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(Decimal::ZERO);
    }
    // Trailing zeros go into the power so `1.000…0` with many zeros stays representable.
    let trimmed = significant.trim_end_matches('0');
    power = power.saturating_add(i64::try_from(significant.len() - trimmed.len()).ok()?);
    // 2^96 - 1 has 29 digits; anything longer cannot be a Decimal mantissa.
    if trimmed.len() > 29 {
        return None;
    }
    let mut mantissa: u128 = trimmed.parse().ok()?;
    let scale = if power >= 0 {
        mantissa = mantissa.checked_mul(10u128.checked_pow(u32::try_from(power).ok()?)?)?;
        0
    } else {
        u32::try_from(power.checked_neg()?).ok()?
    };
    if scale > 28 {
        return None;
    }
    let mantissa = i128::try_from(mantissa).ok()?;
    Decimal::try_from_i128_with_scale(if negative { -mantissa } else { mantissa }, scale).ok()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    struct TestEvent {
        code: String,
        micros: i64,
        properties: Value,
    }

    impl EventView for TestEvent {
        fn code(&self) -> &str {
            &self.code
        }
        fn timestamp_micros(&self) -> i64 {
            self.micros
        }
        fn property(&self, path: &str) -> Option<&Value> {
            property_at_path(&self.properties, path)
        }
    }

    fn event() -> TestEvent {
        let properties = serde_json::from_str(
            r#"{
                "usage": {"bytes": 1536, "seconds": "90.5"},
                "region": "eu-west",
                "weird-key": 7,
                "price": "12.5",
                "count": 3,
                "ratio": 0.1,
                "exact": 0.3000000000000000000000000001,
                "flag": true,
                "tags": [1, 2],
                "meta": {},
                "nothing": null,
                "big": 1e40,
                "word": "abc",
                "long": "this string is definitely longer than forty characters"
            }"#,
        )
        .unwrap();
        TestEvent { code: "api_call".to_owned(), micros: 1_700_000_000_123_456, properties }
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn numeric_results() {
        let cases = [
            // precedence and associativity
            ("1 + 2 * 3", "7"),
            ("(1 + 2) * 3", "9"),
            ("10 - 4 - 3", "3"),
            ("10 - (4 - 3)", "9"),
            ("24 / 4 / 3", "2"),
            ("2 * 3 + 4 * 5", "26"),
            ("7 - 2 * 3", "1"),
            // unary minus
            ("-2 * 3", "-6"),
            ("-(2 + 3)", "-5"),
            ("2 - -3", "5"),
            ("--4", "4"),
            ("-0", "0"),
            // exact decimals
            ("0.1 + 0.2", "0.3"),
            ("1.10 * 3", "3.3"),
            ("1 / 4", "0.25"),
            ("1 / 3", "0.3333333333333333333333333333"),
            ("1 / 3 * 3", "0.9999999999999999999999999999"),
            ("79228162514264337593543950335 - 1", "79228162514264337593543950334"),
            ("'12.5' + 1", "13.5"),
            // rounding
            ("round(1250, -2)", "1300"),
            ("round(1249.99, -2)", "1200"),
            ("round(-1250, -2)", "-1300"),
            ("round(-2.5)", "-3"),
            ("round(2.5)", "3"),
            ("round(2.4)", "2"),
            ("round(2.345, 2)", "2.35"),
            ("round(-2.345, 2)", "-2.35"),
            ("ROUND(1.5)", "2"),
            ("round(0.000001, -28)", "0"),
            ("round(123.456, 28)", "123.456"),
            ("ceil(1.21, 1)", "1.3"),
            ("ceil(-1.5)", "-1"),
            ("ceil(1201, -2)", "1300"),
            ("ceil(-1299, -2)", "-1200"),
            ("ceil(1200, -2)", "1200"),
            ("floor(-1.21, 1)", "-1.3"),
            ("floor(1.5)", "1"),
            ("floor(1299, -2)", "1200"),
            ("floor(-1201, -2)", "-1300"),
            ("Floor(0.05, -1)", "0"),
            ("round(1, 3 - 1)", "1"),
            ("round('2.55', '1')", "2.6"),
            // least / greatest
            ("least(3, 1, 2)", "1"),
            ("greatest(3, 1, 2)", "3"),
            ("least(5)", "5"),
            ("least(-1, -1.5)", "-1.5"),
            ("greatest(event.properties.price, 10)", "12.5"),
            // event fields and properties
            ("event.timestamp", "1700000000.123456"),
            ("floor(event.timestamp / 3600)", "472222"),
            ("event.properties.usage.bytes / 1024", "1.5"),
            ("event.properties.usage['seconds'] + 0.5", "91"),
            ("event.properties['weird-key'] * 2", "14"),
            ("event.properties . count * event.properties.ratio", "0.3"),
            ("event.properties.price * 2", "25"),
            ("event.properties.exact * 10", "3.000000000000000000000000001"),
        ];
        let event = event();
        for (source, expected) in cases {
            let expression = Expression::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            let value = expression.evaluate(&event);
            assert_eq!(value, Ok(ExprValue::Decimal(dec(expected))), "{source}");
        }
    }

    #[test]
    fn exact_decimal_results_have_no_float_noise() {
        let value = Expression::parse("0.1 + 0.2").unwrap().evaluate_decimal(&event()).unwrap();
        assert_eq!(value.to_string(), "0.3");
        let value = Expression::parse("-0 * 1").unwrap().evaluate_decimal(&event()).unwrap();
        assert_eq!(value.to_string(), "0");
    }

    #[test]
    fn string_results() {
        let cases = [
            ("event.code", "api_call"),
            ("'it''s'", "it's"),
            ("''", ""),
            ("concat(event.code, '-', event.properties.region)", "api_call-eu-west"),
            ("concat('n=', 1.50, '/', 2 * 3)", "n=1.5/6"),
            ("concat(event.timestamp)", "1700000000.123456"),
            ("CONCAT(-0, ' ', 1 / 8)", "0 0.125"),
            ("concat(event.properties.price)", "12.5"),
            ("concat('é', 'ß')", "éß"),
        ];
        let event = event();
        for (source, expected) in cases {
            let value = Expression::parse(source).unwrap().evaluate(&event);
            assert_eq!(value, Ok(ExprValue::String(expected.to_owned())), "{source}");
        }
    }

    #[test]
    fn evaluation_errors() {
        let missing = |path: &str| EvalError::MissingProperty { path: path.to_owned() };
        let mismatch = |path: &str, found| EvalError::TypeMismatch { path: path.to_owned(), found };
        let not_a_number = |value: &str| EvalError::NotANumber { value: value.to_owned() };
        let cases = [
            ("1 / 0", EvalError::DivisionByZero),
            ("1 / (2 - 2)", EvalError::DivisionByZero),
            ("event.properties.price / (event.properties.count - 3)", EvalError::DivisionByZero),
            ("event.properties.absent + 1", missing("absent")),
            ("event.properties.nothing", missing("nothing")),
            ("event.properties.usage.absent", missing("usage.absent")),
            ("event.properties.region.sub", missing("region.sub")),
            ("event.properties.absent + 1 / 0", missing("absent")),
            ("event.properties.flag + 1", mismatch("flag", "a boolean")),
            ("event.properties.tags", mismatch("tags", "an array")),
            ("concat(event.properties.meta)", mismatch("meta", "an object")),
            ("event.properties.big", EvalError::NumberOutOfRange { path: "big".to_owned() }),
            ("event.properties.word * 2", not_a_number("abc")),
            ("event.code + 1", not_a_number("api_call")),
            ("-event.properties.region", not_a_number("eu-west")),
            ("' 4 ' + 1", not_a_number(" 4 ")),
            ("least(1, 'x')", not_a_number("x")),
            (
                "event.properties.long + 1",
                not_a_number("this string is definitely longer than fo…"),
            ),
            ("79228162514264337593543950335 + 1", EvalError::Overflow),
            ("79228162514264337593543950335 * 2", EvalError::Overflow),
            ("-79228162514264337593543950335 - 1", EvalError::Overflow),
            ("79228162514264337593543950335 / 0.5", EvalError::Overflow),
            ("round(79228162514264337593543950335, -28)", EvalError::Overflow),
            (
                "round(1, event.properties.ratio)",
                EvalError::InvalidDecimalPlaces { function: "round", value: "0.1".to_owned() },
            ),
            (
                "ceil(1, 20 + 9)",
                EvalError::InvalidDecimalPlaces { function: "ceil", value: "29".to_owned() },
            ),
        ];
        let event = event();
        for (source, expected) in cases {
            let value = Expression::parse(source).unwrap().evaluate(&event);
            assert_eq!(value, Err(expected), "{source}");
        }
    }

    #[test]
    fn evaluation_error_messages() {
        let cases = [
            (EvalError::MissingProperty { path: "a.b".to_owned() }, "missing property 'a.b'"),
            (
                EvalError::TypeMismatch { path: "flag".to_owned(), found: "a boolean" },
                "property 'flag' is a boolean, expected a number or a string",
            ),
            (EvalError::NotANumber { value: "abc".to_owned() }, "'abc' is not a number"),
            (EvalError::DivisionByZero, "division by zero"),
            (EvalError::Overflow, "arithmetic overflow"),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn evaluate_decimal_converts_numeric_strings() {
        let event = event();
        let eval = |source: &str| Expression::parse(source).unwrap().evaluate_decimal(&event);
        assert_eq!(eval("event.properties.price"), Ok(dec("12.5")));
        assert_eq!(eval("concat(1, 2)"), Ok(dec("12")));
        assert_eq!(eval("event.properties.count"), Ok(dec("3")));
        assert_eq!(eval("event.code"), Err(EvalError::NotANumber { value: "api_call".to_owned() }));
    }

    #[test]
    fn timestamp_keeps_microseconds() {
        let cases = [
            (0, "0"),
            (1, "0.000001"),
            (-1_500_000, "-1.5"),
            (1_700_000_000_000_000, "1700000000"),
            (i64::MAX, "9223372036854.775807"),
        ];
        for (micros, expected) in cases {
            let event = TestEvent { code: String::new(), micros, properties: json!({}) };
            let value = Expression::parse("event.timestamp").unwrap().evaluate(&event);
            assert_eq!(value, Ok(ExprValue::Decimal(dec(expected))), "{micros}");
        }
    }

    #[test]
    fn parse_errors_point_at_the_problem() {
        let long_number = "99999999999999999999999999999";
        let cases: Vec<(String, usize, String)> = [
            ("", 0, "empty expression"),
            ("   ", 0, "empty expression"),
            ("(1 + 2))", 7, "unexpected ')'"),
            ("1 2", 2, "unexpected '2'"),
            ("1 + , 2", 4, "unexpected ','"),
            ("1 +", 3, "unexpected end of expression"),
            ("-", 1, "unexpected end of expression"),
            ("+1", 0, "unexpected '+'"),
            ("1 + 'x' 'y'", 8, "unexpected string literal"),
            ("(1 + 2", 6, "expected ')', found end of expression"),
            ("sqrt(4)", 0, "unknown function 'sqrt'"),
            ("1 + SQRT(4)", 4, "unknown function 'SQRT'"),
            ("1 + 'abc", 4, "unterminated string literal"),
            ("'it''s", 0, "unterminated string literal"),
            ("round(1, 2, 3)", 0, "expected 1 or 2 arguments to round, got 3"),
            ("2 * floor()", 4, "expected 1 or 2 arguments to floor, got 0"),
            ("least()", 0, "expected at least 1 argument to least, got 0"),
            ("greatest()", 0, "expected at least 1 argument to greatest, got 0"),
            ("concat()", 0, "expected at least 1 argument to concat, got 0"),
            ("round(1 2)", 8, "expected ',' or ')', found '2'"),
            ("round(1,", 8, "unexpected end of expression"),
            ("round(1, 2.5)", 9, "decimal places for round must be an integer from -28 to 28, got 2.5"),
            ("floor(1, -29)", 9, "decimal places for floor must be an integer from -28 to 28, got -29"),
            ("foo", 0, "unknown identifier 'foo'"),
            ("1 + foo", 4, "unknown identifier 'foo'"),
            ("Event.code", 0, "unknown identifier 'Event'"),
            ("1 # 2", 2, "unexpected character '#'"),
            ("'éé' # 2", 5, "unexpected character '#'"),
            ("1.", 2, "expected a digit after '.' in number literal"),
            ("1.x", 2, "expected a digit after '.' in number literal"),
            (".5", 0, "a number literal must start with a digit (write 0.5)"),
            ("1.2.3", 3, "unexpected '.'"),
            ("1e3", 0, "invalid number literal '1e3'"),
            ("2 * 12abc", 4, "invalid number literal '12abc'"),
            ("0.00000000000000000000000000001", 0, "number literal '0.00000000000000000000000000001' cannot be represented exactly as a decimal"),
            ("event", 5, "expected '.' after 'event', found end of expression"),
            ("event.foo", 6, "unknown event field 'foo', expected code, timestamp or properties"),
            ("event.1", 6, "expected an event field after 'event.', found '1'"),
            ("event.'code'", 6, "expected an event field after 'event.', found string literal"),
            ("event.properties", 16, "expected a property key after 'event.properties', found end of expression"),
            ("event.properties + 1", 17, "expected a property key after 'event.properties', found '+'"),
            ("event.properties.", 17, "expected a property key after '.', found end of expression"),
            ("event.properties.a.(", 19, "expected a property key after '.', found '('"),
            ("event.properties[1]", 17, "expected a quoted property key after '[', found '1'"),
            ("event.properties['a'", 20, "expected ']', found end of expression"),
            ("event.properties['']", 17, "property key must not be empty"),
            ("event.properties['a.b']", 17, "property key must not contain '.'"),
        ]
        .into_iter()
        .map(|(s, p, m)| (s.to_owned(), p, m.to_owned()))
        .chain([(
            long_number.to_owned(),
            0,
            format!("number literal '{long_number}' cannot be represented exactly as a decimal"),
        )])
        .collect();
        for (source, position, message) in cases {
            let error = Expression::parse(&source).expect_err(&source);
            assert_eq!(error, ParseError { position, message: message.clone() }, "{source}");
            assert_eq!(error.to_string(), format!("{message} at position {position}"));
        }
    }

    #[test]
    fn nesting_depth_is_limited() {
        let parens = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert!(Expression::parse(&parens(MAX_NESTING_DEPTH)).is_ok());
        let error = Expression::parse(&parens(MAX_NESTING_DEPTH + 1)).unwrap_err();
        assert_eq!(
            error,
            ParseError::new(64, "expression is nested too deeply (more than 64 levels)")
        );

        let minus = |n: usize| format!("{}1", "-".repeat(n));
        assert_eq!(
            Expression::parse(&minus(MAX_NESTING_DEPTH)).unwrap().evaluate_decimal(&event()),
            Ok(Decimal::ONE)
        );
        assert_eq!(Expression::parse(&minus(MAX_NESTING_DEPTH + 1)).unwrap_err().position, 64);

        // `least(` is 6 characters; the 65th call starts at 64 * 6.
        let calls = |n: usize| format!("{}1{}", "least(".repeat(n), ")".repeat(n));
        assert!(Expression::parse(&calls(MAX_NESTING_DEPTH)).is_ok());
        assert_eq!(Expression::parse(&calls(MAX_NESTING_DEPTH + 1)).unwrap_err().position, 384);
    }

    #[test]
    fn source_length_is_limited() {
        let longest = format!("'{}'", "é".repeat(MAX_SOURCE_CHARS - 2));
        let value = Expression::parse(&longest).unwrap().evaluate(&event()).unwrap();
        assert_eq!(value.to_string().chars().count(), 4094);

        let too_long = format!("'{}'", "é".repeat(MAX_SOURCE_CHARS - 1));
        assert_eq!(
            Expression::parse(&too_long).unwrap_err(),
            ParseError::new(4096, "expression is too long (4097 characters, at most 4096)")
        );
    }

    #[test]
    fn tree_height_is_limited() {
        // A flat chain of n additions is a tree of height n + 1.
        let chain = |additions: usize| format!("1{}", " +1".repeat(additions));
        let tallest = Expression::parse(&chain(MAX_TREE_HEIGHT - 1)).unwrap();
        assert_eq!(tallest.evaluate_decimal(&event()), Ok(Decimal::from(128)));
        // The 128th '+' is at 3 * 127 + 2.
        assert_eq!(
            Expression::parse(&chain(MAX_TREE_HEIGHT)).unwrap_err(),
            ParseError::new(
                383,
                "expression is too complex (more than 128 operations applied one after another)"
            )
        );

        // Calls and unary minus count too: 64 nested calls around a 64-high chain is 128.
        let nested = |additions: usize| {
            format!("{}{}{}", "least(".repeat(64), chain(additions), ")".repeat(64))
        };
        let value = Expression::parse(&nested(63)).unwrap().evaluate_decimal(&event());
        assert_eq!(value, Ok(Decimal::from(64)));
        // The outermost call closes the tree, so the error points at it.
        assert_eq!(Expression::parse(&nested(64)).unwrap_err().position, 0);
    }

    #[test]
    fn a_long_run_of_minus_signs_prints_in_a_form_that_parses_back() {
        // Found by the `expression` fuzz target: printing `-(-(...))` added a nesting level
        // per sign, so the printed form of a valid expression could exceed the limit.
        let source = format!("5.5 - {}555 / 2", "-".repeat(52));
        let expression = Expression::parse(&source).unwrap();
        assert_eq!(Expression::parse(&expression.to_string()).unwrap(), expression);
    }

    #[test]
    fn canonical_display() {
        let cases = [
            ("1+2*3", "1 + 2 * 3"),
            ("(1+2)*3", "(1 + 2) * 3"),
            ("1-(2-3)", "1 - (2 - 3)"),
            ("(1-2)-3", "1 - 2 - 3"),
            ("1+(2+3)", "1 + (2 + 3)"),
            ("1/(2*3)", "1 / (2 * 3)"),
            ("((1))", "1"),
            ("-(1+2)", "-(1 + 2)"),
            ("--1", "--1"),
            ("- -(-1)", "---1"),
            ("2 - -3", "2 - -3"),
            ("-2*3", "-2 * 3"),
            ("1.50 + 0.0", "1.5 + 0"),
            ("ROUND( event.properties.a , -2 )", "round(event.properties.a, -2)"),
            ("Least(1,2,3)", "least(1, 2, 3)"),
            ("event.properties['weird-key']", "event.properties['weird-key']"),
            ("event.properties['a''b']['c d']", "event.properties['a''b']['c d']"),
            ("event.properties['ok'].x", "event.properties.ok.x"),
            ("concat('it''s',1.50,event.code)", "concat('it''s', 1.5, event.code)"),
            ("event.timestamp/60", "event.timestamp / 60"),
        ];
        for (source, canonical) in cases {
            let expression = Expression::parse(source).unwrap();
            assert_eq!(expression.to_string(), canonical, "{source}");
            assert_eq!(expression.source(), source);
            let reparsed = Expression::parse(canonical).unwrap();
            assert_eq!(reparsed, expression, "{source}");
        }
    }

    #[test]
    fn property_paths_in_first_use_order() {
        let cases: [(&str, &[&str]); 4] = [
            ("1 + 2", &[]),
            ("event.properties.usage.bytes / 1024", &["usage.bytes"]),
            (
                "concat(event.properties.region, event.properties['weird-key'], \
                 round(event.properties.usage.bytes), event.properties.region)",
                &["region", "weird-key", "usage.bytes"],
            ),
            ("round(event.properties.a, event.properties.b) - event.properties.a", &["a", "b"]),
        ];
        for (source, expected) in cases {
            let paths = Expression::parse(source).unwrap().property_paths();
            assert_eq!(paths, expected, "{source}");
        }
    }

    #[test]
    fn json_to_decimal_is_exact() {
        let number = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        let cases = [
            (number("-12"), Some("-12")),
            (number("3.5"), Some("3.5")),
            (number("1e3"), Some("1000")),
            (number("1E+3"), Some("1000")),
            (number("25e-1"), Some("2.5")),
            (number("0.1"), Some("0.1")),
            (number("0e999999999999999999999"), Some("0")),
            (number("1.000000000000000000000000000000000000"), Some("1")),
            (number("0.3000000000000000000000000001"), Some("0.3000000000000000000000000001")),
            (number("0.30000000000000000000000000001"), None),
            (number("79228162514264337593543950335"), Some("79228162514264337593543950335")),
            (number("79228162514264337593543950336"), None),
            (number("1e40"), None),
            (number("1e-29"), None),
            (json!("12.5"), Some("12.5")),
            (json!("-0.5"), Some("-0.5")),
            (json!("1e3"), Some("1000")),
            (json!(" 4 "), None),
            (json!("+4"), None),
            (json!("4."), None),
            (json!(".5"), None),
            (json!("1_000"), None),
            (json!(""), None),
            (json!("-"), None),
            (json!("1e"), None),
            (json!("abc"), None),
            (Value::Null, None),
            (json!(true), None),
            (json!({"a": 1}), None),
            (json!([1]), None),
        ];
        for (value, expected) in cases {
            assert_eq!(json_to_decimal(&value), expected.map(dec), "{value}");
        }
    }

    #[test]
    fn serde_keeps_the_source_text() {
        let expression = Expression::parse("round( event.properties.a ,2)").unwrap();
        let json = serde_json::to_string(&expression).unwrap();
        assert_eq!(json, r#""round( event.properties.a ,2)""#);
        let back: Expression = serde_json::from_str(&json).unwrap();
        assert_eq!(back.source(), expression.source());
        let error = serde_json::from_str::<Expression>(r#""1 +""#).unwrap_err();
        assert!(error.to_string().contains("unexpected end of expression at position 3"));
    }

    /// Small integer trees of literals, unary minus and the four operators.
    fn integer_tree() -> impl Strategy<Value = Node> {
        let leaf = (0i64..100).prop_map(|n| Node::Number(Decimal::from(n)));
        leaf.prop_recursive(6, 48, 2, |inner| {
            let op = prop_oneof![
                Just(BinaryOp::Add),
                Just(BinaryOp::Sub),
                Just(BinaryOp::Mul),
                Just(BinaryOp::Div),
            ];
            prop_oneof![
                inner.clone().prop_map(|n| Node::Neg(Box::new(n))),
                (op, inner.clone(), inner).prop_map(|(op, lhs, rhs)| Node::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                }),
            ]
        })
    }

    /// The same tree computed directly with `Decimal` arithmetic.
    fn reference(node: &Node) -> Result<Decimal, EvalError> {
        match node {
            Node::Number(d) => Ok(*d),
            Node::Neg(inner) => Ok(-reference(inner)?),
            Node::Binary { op, lhs, rhs } => {
                let (a, b) = (reference(lhs)?, reference(rhs)?);
                match op {
                    BinaryOp::Add => a.checked_add(b).ok_or(EvalError::Overflow),
                    BinaryOp::Sub => a.checked_sub(b).ok_or(EvalError::Overflow),
                    BinaryOp::Mul => a.checked_mul(b).ok_or(EvalError::Overflow),
                    BinaryOp::Div if b == Decimal::ZERO => Err(EvalError::DivisionByZero),
                    BinaryOp::Div => a.checked_div(b).ok_or(EvalError::Overflow),
                }
            }
            _ => unreachable!("integer trees hold only numbers and arithmetic"),
        }
    }

    proptest! {
        #[test]
        fn integer_trees_round_trip_and_match_decimal_arithmetic(tree in integer_tree()) {
            let text = tree.to_string();
            let parsed = Expression::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&parsed.root, &tree, "{}", text);
            prop_assert_eq!(parsed.evaluate_decimal(&event()), reference(&tree), "{}", text);
        }
    }
}
