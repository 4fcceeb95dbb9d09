//! Docker's image reference grammar (`docker/distribution/reference`), with Docker's
//! normalisation: `busybox` is `docker.io/library/busybox`, and its *familiar* form (what
//! `repositories.json` stores and what docker prints) is `busybox` again.
//!
//! The grammar is built from the same regular expressions as the Go package, matched with
//! the same leftmost-first semantics, so a string is accepted, split and rejected exactly as
//! docker does.

use std::fmt;
use std::sync::LazyLock;

use layer_digest::Digest;
use regex::Regex;

/// The registry a name without one belongs to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO: &str = "library";
/// The tag a name without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository name (domain and path), as docker allows.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a string is not a valid reference. The texts are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Does not match the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// Upper case in the repository name.
    #[error("invalid reference format: repository name must be lowercase")]
    Uppercase,
    /// No repository name.
    #[error("repository name must have at least one component")]
    Empty,
    /// A repository name over the length limit.
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    TooLong,
    /// A repository name that is a 64-hex-digit string (it would read as an image ID).
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    /// A tag outside the tag grammar.
    #[error("invalid tag format")]
    InvalidTag,
    /// A digest that does not parse.
    #[error("invalid digest: {0}")]
    InvalidDigest(String),
}

// The Go package's building blocks, as pattern strings.
fn optional(s: &str) -> String {
    format!("(?:{s})?")
}
fn repeated(s: &str) -> String {
    format!("(?:{s})+")
}

struct Grammar {
    reference: Regex,
    name: Regex,
    tag: Regex,
    identifier: Regex,
}

static GRAMMAR: LazyLock<Grammar> = LazyLock::new(|| {
    let alnum = "[a-z0-9]+";
    let separator = "(?:[._]|__|[-]*)";
    let component = format!(
        "{alnum}{}",
        optional(&repeated(&format!("{separator}{alnum}")))
    );
    let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!(
        "{domain_component}{}{}",
        optional(&repeated(&format!(r"\.{domain_component}"))),
        optional("[:][0-9]+")
    );
    // Go's `\w` is ASCII only.
    let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
    let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";
    let path = format!(
        "{component}{}",
        optional(&repeated(&format!("/{component}")))
    );
    let name = format!("{}{path}", optional(&format!("{domain}/")));
    let compile = |p: String| Regex::new(&p).expect("the reference grammar compiles");
    Grammar {
        reference: compile(format!(
            "^({name}){}{}$",
            optional(&format!("[:]({tag})")),
            optional(&format!("[@]({digest})"))
        )),
        name: compile(format!("^{}({path})$", optional(&format!("({domain})/")))),
        tag: compile(format!("^{tag}$")),
        identifier: compile("^[a-f0-9]{64}$".to_owned()),
    }
});

/// A named reference: a repository (domain and path), maybe a tag, maybe a digest.
///
/// `Display` gives the full form (`docker.io/library/busybox:latest`); [`familiar_string`]
/// the short one docker prints and stores (`busybox:latest`).
///
/// [`familiar_string`]: Reference::familiar_string
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Docker's `ParseNormalizedNamed`: what `docker tag`, `docker load`'s `RepoTags` and the
    /// reference store accept. A name without a domain gets `docker.io`, a one-part name on
    /// `docker.io` gets `library/`. No default tag is added (see [`Reference::with_default_tag`]).
    pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
        let g = &*GRAMMAR;
        if g.identifier.is_match(s) {
            return Err(ReferenceError::HexName(s.to_owned()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::Uppercase);
        }
        parse(&format!("{domain}/{remainder}"))
    }

    /// A reference from parts already known to be valid (a name and a tag).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !GRAMMAR.tag.is_match(tag) {
            return Err(ReferenceError::InvalidTag);
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// Docker's `TagNameOnly`: a bare name gets the `latest` tag.
    pub fn with_default_tag(self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            Reference {
                tag: Some(DEFAULT_TAG.to_owned()),
                ..self
            }
        } else {
            self
        }
    }

    /// Only a name: no tag, no digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The registry (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full repository name: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// Docker's `FamiliarName`: `busybox`, `me/app`, `quay.io/x/y`.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.split_once('/') {
            Some((OFFICIAL_REPO, rest)) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// Docker's `FamiliarString`: the familiar name with the tag and digest.
    pub fn familiar_string(&self) -> String {
        self.with_suffix(self.familiar_name())
    }

    /// The reference without its tag when it also has a digest (docker's `favorDigest`: the
    /// reference store keeps only the digest of such a reference).
    pub fn favor_digest(self) -> Reference {
        if self.digest.is_some() {
            Reference { tag: None, ..self }
        } else {
            self
        }
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse_normalized(s)
    }
}

/// Whether `s` is a full 64-hex image ID (which docker refuses as a repository name).
pub fn is_full_identifier(s: &str) -> bool {
    GRAMMAR.identifier.is_match(s)
}

fn split_docker_domain(name: &str) -> (&str, String) {
    let (mut domain, remainder) = match name.find('/') {
        Some(i) if name[..i].contains(['.', ':']) || &name[..i] == "localhost" => {
            (&name[..i], name[i + 1..].to_owned())
        }
        _ => (DEFAULT_DOMAIN, name.to_owned()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN;
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        return (domain, format!("{OFFICIAL_REPO}/{remainder}"));
    }
    (domain, remainder)
}

/// Go's `reference.Parse` of a string that always has a domain here.
fn parse(s: &str) -> Result<Reference, ReferenceError> {
    let g = &*GRAMMAR;
    let Some(caps) = g.reference.captures(s) else {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if g.reference.is_match(&s.to_lowercase()) {
            return Err(ReferenceError::Uppercase);
        }
        return Err(ReferenceError::InvalidFormat);
    };
    let name = caps.get(1).map_or("", |m| m.as_str());
    if name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::TooLong);
    }
    let (domain, path) = match g.name.captures(name) {
        Some(n) => (
            n.get(1).map_or("", |m| m.as_str()).to_owned(),
            n.get(2).map_or("", |m| m.as_str()).to_owned(),
        ),
        None => (String::new(), name.to_owned()),
    };
    let tag = caps
        .get(2)
        .map(|m| m.as_str().to_owned())
        .filter(|t| !t.is_empty());
    let digest = match caps.get(3).map(|m| m.as_str()).filter(|d| !d.is_empty()) {
        Some(d) => Some(
            d.parse::<Digest>()
                .map_err(|e| ReferenceError::InvalidDigest(e.to_string()))?,
        ),
        None => None,
    };
    if path.is_empty() {
        return Err(ReferenceError::Empty);
    }
    Ok(Reference {
        domain,
        path,
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse_normalized(s).unwrap().to_string()
    }

    /// Cases from distribution/reference's normalize_test.go and reference_test.go.
    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("me/app:v1"), "docker.io/me/app:v1");
        assert_eq!(norm("index.docker.io/busybox"), "docker.io/library/busybox");
        assert_eq!(norm("localhost/app"), "localhost/app");
        assert_eq!(norm("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(norm("quay.io/x/y"), "quay.io/x/y");
        assert_eq!(norm("docker.io/library/a/b"), "docker.io/library/a/b");
        let r = Reference::parse_normalized("busybox").unwrap();
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(
            r.clone().with_default_tag().familiar_string(),
            "busybox:latest"
        );
        let r = Reference::parse_normalized("docker.io/library/a/b:t").unwrap();
        assert_eq!(r.familiar_string(), "library/a/b:t");
        let r = Reference::parse_normalized("localhost:5000/x:1").unwrap();
        assert_eq!(r.familiar_string(), "localhost:5000/x:1");
        let d = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
        let r = Reference::parse_normalized(&format!("a:t@{d}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.clone().favor_digest().familiar_string(), format!("a@{d}"));
    }

    #[test]
    fn rejects_like_docker() {
        use ReferenceError::*;
        let bad = |s: &str| Reference::parse_normalized(s).unwrap_err();
        assert_eq!(bad("Busybox"), Uppercase);
        assert_eq!(bad(""), InvalidFormat);
        assert_eq!(bad("a:"), InvalidFormat);
        assert_eq!(bad("a:-t"), InvalidFormat);
        assert_eq!(bad("a/:t"), InvalidFormat);
        assert_eq!(bad("a b"), InvalidFormat);
        assert_eq!(bad("a__-b"), InvalidFormat);
        assert_eq!(bad("a..b"), InvalidFormat);
        assert_eq!(bad(&format!("a:{}", "t".repeat(129))), InvalidFormat);
        assert!(Reference::parse_normalized(&format!("a:{}", "t".repeat(128))).is_ok());
        assert_eq!(bad(&"a".repeat(64)), HexName("a".repeat(64)));
        assert_eq!(bad(&format!("x/{}", "a".repeat(250))), TooLong);
        assert!(matches!(bad("a@sha256:abc"), InvalidFormat));
        assert!(matches!(
            bad(&format!("a@md5:{}", "a".repeat(32))),
            InvalidDigest(_)
        ));
        // Uppercase in a domain is fine; in a tag too.
        assert!(Reference::parse_normalized("Quay.io/x:T").is_ok());
        assert_eq!(bad("quay.io/X"), Uppercase);
        // Separators: one `.`/`_`, two `_`, any number of `-`.
        assert!(Reference::parse_normalized("a.b_c__d---e").is_ok());
        assert!(Reference::parse_normalized("a___b").is_err());
    }
}
