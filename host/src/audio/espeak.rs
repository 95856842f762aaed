//! Text to IPA phonemes with the espeak-ng library, grouped into sentences the way Piper
//! groups them (each clause's phonemes, then its punctuation — and a space after `,` `:` `;` —
//! decomposed into code points; `.` `?` `!` end a sentence).
//!
//! The library is opened at run time (`libespeak-ng.so.1`, Debian's `libespeak-ng1`), so the
//! server starts, and everything but speech works, where it is not installed; speech then
//! answers that it is missing. espeak-ng keeps global state, so one lock serialises every call.
//!
//! Debian's espeak-ng (1.51) predates `espeak_TextToPhonemesWithTerminator`, which Piper's own
//! build uses to learn each clause's punctuation; [`clause_end`] reads it instead from the text
//! espeak-ng consumed for the clause, which ends one character past the clause.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock};

use unicode_normalization::UnicodeNormalization;

/// `AUDIO_OUTPUT_SYNCHRONOUS`: no audio device is opened.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
/// `espeakINITIALIZE_DONT_EXIT`: report missing data instead of exiting the process.
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
/// `espeakCHARS_UTF8`.
const CHARS_UTF8: c_int = 1;
/// `espeakPHONEMES_IPA`.
const PHONEMES_IPA: c_int = 0x02;

/// The shared library's names, most specific first.
const LIBRARY_NAMES: &[&str] = &["libespeak-ng.so.1", "libespeak-ng.so", "libespeak-ng.1.dylib", "libespeak-ng.dylib"];

#[derive(Debug, Clone, thiserror::Error)]
pub enum EspeakError {
    #[error(
        "espeak-ng is not installed ({0}); speech needs its library (Debian: apt install libespeak-ng1 espeak-ng-data)"
    )]
    NotInstalled(String),
    #[error("espeak-ng has no voice `{0}`")]
    UnknownVoice(String),
}

type Initialize = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type SetVoiceByName = unsafe extern "C" fn(*const c_char) -> c_int;
type TextToPhonemes = unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char;

struct Library {
    /// Kept so the function pointers stay valid.
    _library: libloading::Library,
    set_voice: SetVoiceByName,
    text_to_phonemes: TextToPhonemes,
}

static LIBRARY: OnceLock<Result<Mutex<Library>, EspeakError>> = OnceLock::new();

fn library() -> Result<&'static Mutex<Library>, EspeakError> {
    LIBRARY.get_or_init(open).as_ref().map_err(Clone::clone)
}

fn open() -> Result<Mutex<Library>, EspeakError> {
    let mut last = String::new();
    for name in LIBRARY_NAMES {
        // SAFETY: loading espeak-ng runs no initialisers with preconditions of ours.
        match unsafe { libloading::Library::new(name) } {
            Ok(library) => {
                // SAFETY: the signatures are those of espeak-ng's speak_lib.h.
                let (initialize, set_voice, text_to_phonemes) = unsafe {
                    let symbol_error = |e: libloading::Error| EspeakError::NotInstalled(format!("{name}: {e}"));
                    (
                        *library.get::<Initialize>(b"espeak_Initialize\0").map_err(symbol_error)?,
                        *library.get::<SetVoiceByName>(b"espeak_SetVoiceByName\0").map_err(symbol_error)?,
                        *library.get::<TextToPhonemes>(b"espeak_TextToPhonemes\0").map_err(symbol_error)?,
                    )
                };
                // SAFETY: a null path means espeak-ng's own data directory; the flag makes a
                // missing directory an error return rather than an exit.
                let rate = unsafe { initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, std::ptr::null(), INITIALIZE_DONT_EXIT) };
                if rate <= 0 {
                    return Err(EspeakError::NotInstalled(format!("{name} found, but not its data (espeak-ng-data)")));
                }
                return Ok(Mutex::new(Library { _library: library, set_voice, text_to_phonemes }));
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(EspeakError::NotInstalled(last))
}

/// Whether espeak-ng can be used here.
pub fn available() -> Result<(), EspeakError> {
    library().map(|_| ())
}

/// `text`'s phonemes by sentence, each phoneme one code point (after NFD).
pub fn phonemize(voice: &str, text: &str) -> Result<Vec<Vec<String>>, EspeakError> {
    let library = library()?;
    let voice_name = CString::new(voice).map_err(|_| EspeakError::UnknownVoice(voice.to_owned()))?;
    // A NUL would end the text early; it carries nothing to say.
    let text: String = text.chars().filter(|&c| c != '\0').collect();
    let Ok(c_text) = CString::new(text.as_bytes()) else { return Ok(Vec::new()) };
    let lib = library.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: a NUL-terminated name; espeak-ng copies what it needs.
    if unsafe { (lib.set_voice)(voice_name.as_ptr()) } != 0 {
        return Err(EspeakError::UnknownVoice(voice.to_owned()));
    }
    let base = c_text.as_ptr() as usize;
    let len = text.len();
    let mut cursor: *const c_void = c_text.as_ptr().cast();
    let mut clauses = Vec::new();
    // Each call consumes at least one byte, so the loop ends; the bound is a second guard.
    for _ in 0..=len {
        if cursor.is_null() {
            break;
        }
        let start = cursor as usize - base;
        // SAFETY: `cursor` points into `c_text`, which outlives the call; espeak-ng moves it
        // to the next clause, or to null at the end, and returns its own buffer, copied at once.
        let phonemes = unsafe {
            let out = (lib.text_to_phonemes)(&mut cursor, CHARS_UTF8, PHONEMES_IPA);
            if out.is_null() { String::new() } else { CStr::from_ptr(out).to_string_lossy().into_owned() }
        };
        let end = if cursor.is_null() { len } else { (cursor as usize - base).min(len) };
        let consumed = text.get(start.min(end)..end).unwrap_or_default();
        clauses.push((phonemes, clause_end(consumed, cursor.is_null())));
        if !cursor.is_null() && end <= start {
            break;
        }
    }
    drop(lib);
    Ok(sentences(clauses))
}

/// Phonemes of a voice whose `phoneme_type` is `text`: the text's own code points.
pub fn text_phonemes(text: &str) -> Vec<Vec<String>> {
    let phonemes: Vec<String> = text.nfd().map(String::from).collect();
    if phonemes.is_empty() { Vec::new() } else { vec![phonemes] }
}

/// How a clause ended: its punctuation mark, if Piper keeps it, and whether a sentence ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClauseEnd {
    pub mark: Option<char>,
    pub sentence: bool,
}

/// The end of a clause from the text espeak-ng consumed for it: that text runs one character
/// into the next clause unless it reaches the end.
pub fn clause_end(consumed: &str, at_end: bool) -> ClauseEnd {
    let mut text = consumed;
    if !at_end && let Some((i, _)) = text.char_indices().last() {
        text = &text[..i];
    }
    let trimmed = text.trim_end();
    let paragraph = text[trimmed.len()..].matches('\n').count() >= 2;
    let trimmed = trimmed.trim_end_matches(['"', '\'', '”', '’', '»', ')', ']', '}']);
    let marks: String = {
        let run: Vec<char> = trimmed.chars().rev().take_while(|c| ".,?!:;…".contains(*c)).collect();
        run.into_iter().rev().collect()
    };
    let ellipsis = marks.contains('…') || marks.matches('.').count() >= 3;
    match marks.chars().next() {
        Some(c @ ('.' | '?' | '!')) if !ellipsis => ClauseEnd { mark: Some(c), sentence: true },
        Some(c @ (',' | ':' | ';')) => ClauseEnd { mark: Some(c), sentence: false },
        _ => ClauseEnd { mark: None, sentence: paragraph },
    }
}

/// Joins clauses into sentences as Piper does: language-switch flags such as `(en)` removed,
/// the mark kept (with a space after a mark that does not end the sentence), NFD code points.
fn sentences(clauses: Vec<(String, ClauseEnd)>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for (phonemes, end) in clauses {
        let mut clause = strip_language_flags(&phonemes);
        if let Some(mark) = end.mark {
            clause.push(mark);
            if !end.sentence {
                clause.push(' ');
            }
        }
        current.extend(clause.nfd().map(String::from));
        if end.sentence && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Removes `(xx)` spans, which espeak-ng puts around words it reads in another language.
fn strip_language_flags(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut depth = 0usize;
    for c in phonemes.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(mark: Option<char>, sentence: bool) -> ClauseEnd {
        ClauseEnd { mark, sentence }
    }

    #[test]
    fn clause_ends_are_read_past_the_one_character_espeak_reads_ahead() {
        // The consumed spans as Debian's espeak-ng 1.51 reports them.
        assert_eq!(clause_end("Hello, w", false), end(Some(','), false));
        assert_eq!(clause_end("orld! H", false), end(Some('!'), true));
        assert_eq!(clause_end("ow are you today?", true), end(Some('?'), true));
        assert_eq!(clause_end("It costs 3.5 dollars; r", false), end(Some(';'), false));
        assert_eq!(clause_end("eally: y", false), end(Some(':'), false));
        assert_eq!(clause_end("He said \"stop.\"", false), end(Some('.'), true));
        assert_eq!(clause_end("Yes!!! N", false), end(Some('!'), true));
        assert_eq!(clause_end("o?!", true), end(Some('?'), true));
        assert_eq!(clause_end("Well... I", false), end(None, false));
        assert_eq!(clause_end("Wait… w", false), end(None, false));
        assert_eq!(clause_end("A line\n\nA", false), end(None, true));
        assert_eq!(clause_end("nother line", true), end(None, false));
    }

    #[test]
    fn clauses_join_into_sentences_as_piper_joins_them() {
        let clauses = vec![
            ("həlˈoʊ".to_string(), end(Some(','), false)),
            ("wˈɜːld".to_string(), end(Some('!'), true)),
            ("(en)hˌaʊ(fr)".to_string(), end(None, false)),
        ];
        let s = sentences(clauses);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].concat(), "həlˈoʊ, wˈɜːld!");
        assert_eq!(s[1].concat(), "hˌaʊ");
        // Each entry is one code point.
        assert!(s[0].iter().all(|p| p.chars().count() == 1));
    }
}
