//! Quoting an argument vector for the remote shell.
//!
//! SSH carries one command *string*, which sshd hands to the user's login shell (`$SHELL -c STRING`). To keep an
//! argument vector an argument vector, every argument is put in single quotes, where a POSIX shell interprets
//! nothing; a `'` inside is written as `'\''` (close the quote, an escaped quote, reopen). The login shell must be
//! POSIX-compatible (sh, bash, dash, ksh, zsh); csh and fish quote differently.

/// Why an argument vector cannot be sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("empty command")]
    Empty,
    /// A C string ends at NUL: the program could never receive such an argument.
    #[error("argument {0} contains a NUL byte, which no program can receive as an argument")]
    Nul(usize),
}

/// One argument as one single-quoted shell word.
pub fn quote(arg: &str) -> String {
    let mut quoted = String::with_capacity(arg.len() + 2);
    quoted.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// The command string for `argv`: `exec 'prog' 'arg1' …`.
///
/// `exec` replaces the login shell by the program, so the program is the session's process and leads its own
/// process group (sshd runs each command under `setsid`): that group is what a cancelled or timed-out command's
/// kill reaches (see `session.rs`).
pub fn command_line(argv: &[String]) -> Result<String, QuoteError> {
    if argv.is_empty() {
        return Err(QuoteError::Empty);
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(QuoteError::Nul(i));
    }
    let words: Vec<String> = argv.iter().map(|a| quote(a)).collect();
    Ok(format!("exec {}", words.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_quotes_everything_and_escapes_quotes() {
        let cases = [
            ("", "''"),
            ("plain", "'plain'"),
            ("it's", r"'it'\''s'"),
            ("''", r"''\'''\'''"),
            ("a b  c", "'a b  c'"),
            ("$(id) `id` ; | > & \\ \n", "'$(id) `id` ; | > & \\ \n'"),
            ("grüße 日本", "'grüße 日本'"),
        ];
        for (arg, want) in cases {
            assert_eq!(quote(arg), want, "{arg:?}");
        }
    }

    #[test]
    fn a_command_line_execs_the_quoted_words() {
        let argv = vec!["printf".to_owned(), "%s\\0".to_owned(), "; touch /tmp/x".to_owned()];
        assert_eq!(command_line(&argv).unwrap(), r"exec 'printf' '%s\0' '; touch /tmp/x'");
        assert_eq!(command_line(&[]), Err(QuoteError::Empty));
        assert_eq!(command_line(&["a".to_owned(), "b\0".to_owned()]), Err(QuoteError::Nul(1)));
    }

    /// The quoted line, read back by a real local POSIX shell, yields the same words byte for byte.
    #[test]
    fn sh_reads_back_exactly_the_arguments() {
        let hostile = "'\"; $(touch /tmp/omserver-quote-pwned) `id` | > & \\ \n  spaces  grüße '".to_owned();
        let argv = vec!["printf".to_owned(), "%s\\0".to_owned(), hostile.clone(), String::new(), "'".to_owned()];
        let line = command_line(&argv).unwrap();
        let out = std::process::Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success());
        let want = [hostile.as_bytes(), b"\0", b"\0", b"'\0"].concat();
        assert_eq!(out.stdout, want);
        assert!(!std::path::Path::new("/tmp/omserver-quote-pwned").exists());
    }
}
