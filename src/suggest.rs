//! "Did you mean": the known names closest to a typed one, for the hints after a typo of a
//! bus, meter, profile or quantity name (the CLI's refusals and the service's 404s alike).

/// Up to three of `known` closest to `given`, best first, for "did you mean" hints after a
/// typo: normalised Damerau-Levenshtein similarity at least 0.6 (one slip in a short name such
/// as a swapped pair `lna`/`lan` is 0.67; Jaro-Winkler misses those in short names), and
/// within 0.1 of the best.
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = known
        .into_iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(given, k), k))
        .filter(|(score, _)| *score >= 0.6)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    // Only the names about as close as the closest: one slip beats two.
    let best = scored.first().map_or(0.0, |(score, _)| *score);
    scored
        .into_iter()
        .take_while(|(score, _)| *score >= best - 0.1)
        .take(3)
        .map(|(_, k)| k)
        .collect()
}

/// `"; did you mean X?"` (or `X or Y`) when something in `known` is close to `given`, else
/// `""`.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let near = closest(given, known);
    if near.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", near.join(" or "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_names() {
        let buses = ["rs485-1", "rs485-2", "lan"];
        assert_eq!(closest("lna", buses), ["lan"]);
        assert_eq!(closest("rs485-3", buses), ["rs485-1", "rs485-2"]);
        assert!(closest("modbus", buses).is_empty());
        assert_eq!(did_you_mean("rs458-1", buses), "; did you mean rs485-1?");
        assert_eq!(did_you_mean("zzz", buses), "");
    }
}
