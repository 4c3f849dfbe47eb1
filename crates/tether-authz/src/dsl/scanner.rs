//! Character scanner for the OpenFGA DSL, tracking 0-based line and column.

/// A token of the DSL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// An identifier or keyword (letters, digits, `_`, `-`, `.`, `/`).
    Word(String),
    /// One punctuation character.
    Punct(char),
    /// One or more line breaks (with blank and comment-only lines in between).
    Newline,
    /// End of input.
    Eof,
}

/// A token with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
    pub len: usize,
}

impl Token {
    /// Text for error messages, in ANTLR style.
    pub fn display(&self) -> String {
        match &self.tok {
            Tok::Word(w) => w.clone(),
            Tok::Punct(c) => c.to_string(),
            Tok::Newline => "\\n".to_owned(),
            Tok::Eof => "<EOF>".to_owned(),
        }
    }
}

pub(crate) struct Scanner<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    col: usize,
    _src: &'a str,
}

pub(crate) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

impl<'a> Scanner<'a> {
    pub fn new(src: &'a str) -> Self {
        Self {
            chars: src.chars().collect(),
            pos: 0,
            line: 0,
            col: 0,
            _src: src,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 0;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Whether a `#` at the current position starts a comment.
    fn at_comment(&self) -> bool {
        if self.peek_char() != Some('#') {
            return false;
        }
        match self.pos.checked_sub(1).and_then(|p| self.chars.get(p)) {
            None => true,
            Some(prev) => prev.is_whitespace(),
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek_char() {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    fn skip_blanks(&mut self) {
        loop {
            match self.peek_char() {
                Some(' ' | '\t' | '\r') => {
                    self.bump();
                }
                Some('#') if self.at_comment() => self.skip_comment(),
                _ => return,
            }
        }
    }

    /// The next token.
    pub fn next_token(&mut self) -> Token {
        self.skip_blanks();
        let (line, col, start) = (self.line, self.col, self.pos);
        let Some(c) = self.peek_char() else {
            return Token {
                tok: Tok::Eof,
                line,
                col,
                len: 0,
            };
        };
        if c == '\n' {
            while matches!(self.peek_char(), Some('\n')) {
                self.bump();
                self.skip_blanks();
            }
            return Token {
                tok: Tok::Newline,
                line,
                col,
                len: 1,
            };
        }
        if is_word_char(c) {
            let mut word = String::new();
            while let Some(ch) = self.peek_char().filter(|ch| is_word_char(*ch)) {
                word.push(ch);
                self.bump();
            }
            let len = self.pos - start;
            return Token {
                tok: Tok::Word(word),
                line,
                col,
                len,
            };
        }
        self.bump();
        Token {
            tok: Tok::Punct(c),
            line,
            col,
            len: 1,
        }
    }

    /// Raw text up to the `}` that closes an already-consumed `{`, honouring
    /// nested braces and string literals. Returns `None` at end of input.
    pub fn raw_block(&mut self) -> Option<String> {
        let mut depth = 0usize;
        let mut out = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = self.bump() {
            if let Some(q) = quote {
                if c == '\\' {
                    out.push(c);
                    if let Some(n) = self.bump() {
                        out.push(n);
                    }
                    continue;
                }
                if c == q {
                    quote = None;
                }
                out.push(c);
                continue;
            }
            match c {
                '"' | '\'' => quote = Some(c),
                '{' => depth += 1,
                '}' if depth == 0 => return Some(out),
                '}' => depth -= 1,
                _ => {}
            }
            out.push(c);
        }
        None
    }
}
