//! The JOSE signatures the broker makes and checks, on `ring`: a [`CryptoProvider`] for
//! `jsonwebtoken`, installed once per process ([`install`]), so every JWT the broker signs or
//! verifies (its own EdDSA tokens, the identity providers' RS256/PS256/ES256 ID tokens, the
//! audit checkpoints) goes through the same library as its TLS and its randomness.
//!
//! `jsonwebtoken` parses the tokens, headers and keys and checks the claims; this module only
//! turns an algorithm and a key into a signature or a verdict. The key's family must be the
//! algorithm's (an RSA key never checks an ECDSA or HMAC signature). RSA keys are taken from
//! 2048 to 8192 bits. HMAC, which the broker never accepts from an identity provider, and
//! the JWK key utilities stay with `jsonwebtoken`'s RustCrypto provider.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};

/// The provider: ring for every asymmetric algorithm of JWS.
static RING: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
});

/// Makes the ring provider `jsonwebtoken`'s for this process. Call it before the first JWT
/// is signed or verified (the broker's entry points do); later calls change nothing. Returns
/// whether the ring provider is the one in use: `false` only if something in the process
/// used `jsonwebtoken` before the first call, which then keeps the RustCrypto default.
pub fn install() -> bool {
    let ours: &'static CryptoProvider = LazyLock::force(&RING);
    // Installing fails once any provider is set: ours by an earlier call, or the default.
    let _ = ours.install_default();
    CryptoProvider::try_get_default().is_some_and(|p| std::ptr::eq(p, ours))
}

/// The ring provider itself, for callers that hold it explicitly (tests compare it with the
/// RustCrypto provider).
pub fn provider() -> &'static CryptoProvider {
    LazyLock::force(&RING)
}

fn family_must_be(found: AlgorithmFamily, wanted: AlgorithmFamily) -> Result<(), Error> {
    if found == wanted {
        Ok(())
    } else {
        Err(ErrorKind::InvalidKeyFormat.into())
    }
}

/// A parsed private key and how it signs.
enum SigningKey {
    Rsa(RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Arc<Ed25519KeyPair>),
}

/// Most Ed25519 key pairs kept parsed: the key ring's keys (a few, for rotation). Past it the
/// cache starts again.
const PARSED_ED25519: usize = 16;

/// Ed25519 key pairs already parsed, by the SHA-256 of their PKCS#8 document. Parsing derives
/// the public key, a scalar multiplication as costly as the signature itself; the broker signs
/// every token with the same key. `jsonwebtoken` hands the provider the key's bytes on every
/// signature, so the parsed pair is kept here rather than beside the key.
static ED25519_PAIRS: LazyLock<Mutex<HashMap<[u8; 32], Arc<Ed25519KeyPair>>>> =
    LazyLock::new(Mutex::default);

fn ed25519_pair(pkcs8: &[u8]) -> Result<Arc<Ed25519KeyPair>, Error> {
    let mut id = [0u8; 32];
    id.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, pkcs8).as_ref());
    // A poisoned lock only means a panic elsewhere while it was held: the map is still whole.
    let cached = ED25519_PAIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id)
        .cloned();
    if let Some(pair) = cached {
        return Ok(pair);
    }
    let pair = Arc::new(
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?,
    );
    let mut pairs = ED25519_PAIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if pairs.len() >= PARSED_ED25519 {
        pairs.clear();
    }
    pairs.insert(id, pair.clone());
    Ok(pair)
}

struct RingSigner {
    algorithm: Algorithm,
    key: SigningKey,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match &self.key {
            SigningKey::Rsa(pair, padding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*padding, &SystemRandom::new(), msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SigningKey::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SigningKey::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let rsa = |padding: &'static dyn sig::RsaEncoding| -> Result<SigningKey, Error> {
        family_must_be(key.family(), AlgorithmFamily::Rsa)?;
        let pair = RsaKeyPair::from_der(key.as_bytes())
            .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
        Ok(SigningKey::Rsa(pair, padding))
    };
    let ecdsa = |alg: &'static sig::EcdsaSigningAlgorithm| -> Result<SigningKey, Error> {
        family_must_be(key.family(), AlgorithmFamily::Ec)?;
        EcdsaKeyPair::from_pkcs8(alg, key.as_bytes(), &SystemRandom::new())
            .map(SigningKey::Ecdsa)
            .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
    };
    let key = match algorithm {
        Algorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256)?,
        Algorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384)?,
        Algorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512)?,
        Algorithm::PS256 => rsa(&sig::RSA_PSS_SHA256)?,
        Algorithm::PS384 => rsa(&sig::RSA_PSS_SHA384)?,
        Algorithm::PS512 => rsa(&sig::RSA_PSS_SHA512)?,
        Algorithm::ES256 => ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)?,
        Algorithm::ES384 => ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING)?,
        Algorithm::EdDSA => {
            family_must_be(key.family(), AlgorithmFamily::Ed)?;
            SigningKey::Ed25519(ed25519_pair(key.as_bytes())?)
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return (rust_crypto::DEFAULT_PROVIDER.signer_factory)(algorithm, key);
        }
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(RingSigner {
        algorithm: *algorithm,
        key,
    }))
}

/// How a public key checks a signature.
enum Check {
    Rsa(&'static sig::RsaParameters),
    /// ECDSA (fixed-size `r || s`, as JWS has it) or Ed25519, on the key's bytes.
    Point(&'static dyn sig::VerificationAlgorithm),
}

struct RingVerifier {
    algorithm: Algorithm,
    check: Check,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verdict = match (&self.check, self.key.kind()) {
            (Check::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            (Check::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                sig::UnparsedPublicKey::new(*params, der).verify(msg, signature)
            }
            (Check::Point(alg), DecodingKeyKind::SecretOrDer(bytes)) => {
                sig::UnparsedPublicKey::new(*alg, bytes).verify(msg, signature)
            }
            // RSA components for a curve algorithm: the family check below keeps them out.
            (Check::Point(_), DecodingKeyKind::RsaModulusExponent { .. }) => {
                Err(ring::error::Unspecified)
            }
        };
        verdict.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let (family, check) = match algorithm {
        Algorithm::RS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        ),
        Algorithm::RS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        ),
        Algorithm::RS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        ),
        Algorithm::PS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        ),
        Algorithm::PS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        ),
        Algorithm::PS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        ),
        Algorithm::ES256 => (
            AlgorithmFamily::Ec,
            Check::Point(&sig::ECDSA_P256_SHA256_FIXED),
        ),
        Algorithm::ES384 => (
            AlgorithmFamily::Ec,
            Check::Point(&sig::ECDSA_P384_SHA384_FIXED),
        ),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, Check::Point(&sig::ED25519)),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key);
        }
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    family_must_be(key.family(), family)?;
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        check,
        key: key.clone(),
    }))
}

#[cfg(test)]
mod tests {
    //! The ring provider against the RustCrypto one: each verifies what the other signs, and
    //! both refuse the same forgeries.

    use super::*;
    use crate::identity::testissuer::{RSA_PRIVATE_PEM, RSA_PUBLIC_PEM};
    use ring::signature::KeyPair as _;

    fn sign_with(p: &CryptoProvider, alg: Algorithm, key: &EncodingKey, msg: &[u8]) -> Vec<u8> {
        (p.signer_factory)(&alg, key)
            .expect("signer")
            .try_sign(msg)
            .expect("signed")
    }

    fn verifies(
        p: &CryptoProvider,
        alg: Algorithm,
        key: &DecodingKey,
        msg: &[u8],
        s: &[u8],
    ) -> bool {
        (p.verifier_factory)(&alg, key)
            .expect("verifier")
            .verify(msg, &s.to_vec())
            .is_ok()
    }

    /// Key pairs of every family, with the algorithms each serves.
    fn keys() -> Vec<(Vec<Algorithm>, EncodingKey, DecodingKey)> {
        let rng = SystemRandom::new();
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519");
        let ed_pub = Ed25519KeyPair::from_pkcs8(ed.as_ref())
            .expect("ed25519 pair")
            .public_key()
            .as_ref()
            .to_vec();
        let mut out = vec![
            (
                vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("rsa"),
                DecodingKey::from_rsa_pem(RSA_PUBLIC_PEM.as_bytes()).expect("rsa public"),
            ),
            (
                vec![Algorithm::EdDSA],
                EncodingKey::from_ed_der(ed.as_ref()),
                DecodingKey::from_ed_der(&ed_pub),
            ),
        ];
        for (alg, signing) in [
            (Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED_SIGNING),
            (Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        ] {
            let der = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("ecdsa");
            let public = EcdsaKeyPair::from_pkcs8(signing, der.as_ref(), &rng)
                .expect("ecdsa pair")
                .public_key()
                .as_ref()
                .to_vec();
            out.push((
                vec![alg],
                EncodingKey::from_ec_der(der.as_ref()),
                DecodingKey::from_ec_der(&public),
            ));
        }
        out
    }

    #[test]
    fn each_provider_verifies_what_the_other_signs_and_neither_takes_a_forgery() {
        let ours = provider();
        let theirs = &rust_crypto::DEFAULT_PROVIDER;
        let msg = b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0";
        let mut checked = 0;
        for (algs, enc, dec) in keys() {
            for alg in algs {
                for (signer, checker) in [(ours, theirs), (theirs, ours), (ours, ours)] {
                    let s = sign_with(signer, alg, &enc, msg);
                    assert!(verifies(checker, alg, &dec, msg, &s), "{alg:?}");
                    // A changed message, a changed signature, a cut signature: refused by both.
                    let mut other = msg.to_vec();
                    other[3] ^= 1;
                    let mut flipped = s.clone();
                    flipped[s.len() / 2] ^= 0x40;
                    for p in [ours, theirs] {
                        assert!(!verifies(p, alg, &dec, &other, &s), "{alg:?} message");
                        assert!(!verifies(p, alg, &dec, msg, &flipped), "{alg:?} signature");
                        assert!(!verifies(p, alg, &dec, msg, &s[1..]), "{alg:?} length");
                        assert!(!verifies(p, alg, &dec, msg, &[]), "{alg:?} empty");
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 3 * 9);
    }

    #[test]
    fn a_key_of_another_family_is_refused_before_any_check() {
        let all = keys();
        let every: Vec<Algorithm> = all.iter().flat_map(|(algs, _, _)| algs.clone()).collect();
        let mut refused = 0;
        for (_, enc, dec) in &all {
            for alg in every.iter().filter(|a| a.family() != dec.family()) {
                assert!((provider().verifier_factory)(alg, dec).is_err(), "{alg:?}");
                assert!((provider().signer_factory)(alg, enc).is_err(), "{alg:?}");
                refused += 1;
            }
        }
        // The RSA key under 3 other algorithms, the Ed25519 key under 8, each ECDSA key under 7.
        assert_eq!(refused, 3 + 8 + 7 + 7);
        // Same family, other curve: an ES256 key under ES384 checks nothing.
        let (_, es256_enc, es256_dec) = &all[2];
        let msg = b"header.payload";
        let s = sign_with(provider(), Algorithm::ES256, es256_enc, msg);
        assert!(!verifies(provider(), Algorithm::ES384, es256_dec, msg, &s));
        // The RSA public key as an HMAC secret (the classic confusion): an HMAC key is not an
        // RSA key, and an RSA key is not an HMAC key.
        let rsa = DecodingKey::from_rsa_pem(RSA_PUBLIC_PEM.as_bytes()).expect("rsa");
        assert!((provider().verifier_factory)(&Algorithm::HS256, &rsa).is_err());
        let hmac = DecodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()).expect("secret");
        assert!((provider().verifier_factory)(&Algorithm::RS256, &hmac).is_err());
    }

    #[test]
    fn a_parsed_ed25519_pair_signs_for_its_own_key_only() {
        let pairs: Vec<_> = (0..PARSED_ED25519 + 3)
            .map(|_| Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("ed25519"))
            .collect();
        let msg = b"header.payload";
        // Twice over more keys than the cache holds: every signature is its own key's.
        for _ in 0..2 {
            for der in &pairs {
                let public = Ed25519KeyPair::from_pkcs8(der.as_ref())
                    .expect("pair")
                    .public_key()
                    .as_ref()
                    .to_vec();
                let enc = EncodingKey::from_ed_der(der.as_ref());
                let s = sign_with(provider(), Algorithm::EdDSA, &enc, msg);
                let dec = DecodingKey::from_ed_der(&public);
                assert!(verifies(provider(), Algorithm::EdDSA, &dec, msg, &s));
            }
        }
        assert!(ED25519_PAIRS.lock().expect("cache").len() <= PARSED_ED25519);
        // Bytes that are not a key are refused, and not kept.
        let junk = EncodingKey::from_ed_der(b"not a key");
        assert!((provider().signer_factory)(&Algorithm::EdDSA, &junk).is_err());
    }

    #[test]
    fn rsa_components_verify_like_the_der_key() {
        let enc = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("rsa");
        let jwk = crate::identity::testissuer::rsa_jwk();
        let text = |k: &str| jwk[k].as_str().expect("jwk member").to_owned();
        let dec = DecodingKey::from_rsa_components(&text("n"), &text("e")).expect("components");
        let msg = b"header.payload";
        let s = sign_with(provider(), Algorithm::RS256, &enc, msg);
        assert!(verifies(provider(), Algorithm::RS256, &dec, msg, &s));
        assert!(!verifies(
            provider(),
            Algorithm::RS256,
            &dec,
            b"header.payloaD",
            &s
        ));
    }
}
