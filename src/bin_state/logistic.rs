//! L2-regularised logistic regression, hand-written: class-balanced log loss plus
//! `l2/2 · |w − prior|²`, minimised by Nesterov's accelerated gradient with the step from a
//! bound on the loss's curvature. Pure and deterministic: the same examples in the same order
//! give the same weights, bit for bit (sequential f64 sums, a fixed iteration count).
//!
//! The prior is zero for the generic model; a zone's few-shot model starts from, and is pulled
//! towards, the generic weights, so one or two examples per class adjust it instead of
//! replacing it.

/// A linear model on feature vectors: P(positive) = σ(w·x + b).
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// Intercept (not regularised).
    pub bias: f64,
}

/// Iterations of the accelerated gradient: the loss is strongly convex, and with the default
/// regularisation this is past the point where the weights change in their 6th digit.
pub const ITERATIONS: usize = 600;

impl Logistic {
    /// The model's logit for `features`.
    pub fn logit(&self, features: &[f32]) -> f64 {
        self.weights.iter().zip(features).map(|(w, &x)| w * f64::from(x)).sum::<f64>() + self.bias
    }

    /// P(positive) for `features`.
    pub fn probability(&self, features: &[f32]) -> f64 {
        sigmoid(self.logit(features))
    }
}

/// The logistic function, stable for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Fits on `examples` (features, positive?), each class weighted to half of the loss, with
/// penalty `l2/2 · |w − prior|²` (`prior` None: zero; its bias is the starting intercept).
/// Every feature vector must have the same length. With a class missing there is no boundary
/// to learn: the prior comes back unchanged.
pub fn fit(examples: &[(&[f32], bool)], l2: f64, prior: Option<&Logistic>) -> Logistic {
    let dims = examples.first().map_or(0, |(x, _)| x.len());
    let zero = Logistic { weights: vec![0.0; dims], bias: 0.0 };
    let prior = prior.unwrap_or(&zero);
    assert_eq!(prior.weights.len(), dims, "prior and features differ in length");
    let n = examples.len() as f64;
    let positives = examples.iter().filter(|(_, y)| *y).count() as f64;
    let negatives = n - positives;
    if positives == 0.0 || negatives == 0.0 {
        return prior.clone();
    }
    // Class-balanced sample weights, averaging 1 over the examples.
    let class_weight = |y: bool| n / (2.0 * if y { positives } else { negatives });
    let weights_of: Vec<f64> = examples.iter().map(|(_, y)| class_weight(*y)).collect();
    // Curvature bound of the mean weighted loss: ¼ · mean(c·(|x|² + 1)) (the trace bounds the
    // largest eigenvalue), plus the penalty's.
    let curvature = 0.25
        * examples
            .iter()
            .zip(&weights_of)
            .map(|((x, _), c)| c * (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() + 1.0))
            .sum::<f64>()
        / n
        + l2;
    let step = 1.0 / curvature;
    let condition = (curvature / l2.max(1e-12)).sqrt();
    let momentum = (condition - 1.0) / (condition + 1.0);
    let mut current = prior.clone();
    let mut previous = prior.clone();
    let mut gradient = vec![0.0; dims];
    for _ in 0..ITERATIONS {
        // Look-ahead point y = x + β(x − x_prev).
        let look = Logistic {
            weights: current.weights.iter().zip(&previous.weights).map(|(x, p)| x + momentum * (x - p)).collect(),
            bias: current.bias + momentum * (current.bias - previous.bias),
        };
        gradient.iter_mut().for_each(|g| *g = 0.0);
        let mut bias_gradient = 0.0;
        for ((x, y), c) in examples.iter().zip(&weights_of) {
            let residual = c * (look.probability(x) - if *y { 1.0 } else { 0.0 }) / n;
            bias_gradient += residual;
            for (g, &v) in gradient.iter_mut().zip(x.iter()) {
                *g += residual * f64::from(v);
            }
        }
        let next = Logistic {
            weights: look
                .weights
                .iter()
                .zip(&gradient)
                .zip(&prior.weights)
                .map(|((w, g), p)| w - step * (g + l2 * (w - p)))
                .collect(),
            bias: look.bias - step * bias_gradient,
        };
        previous = std::mem::replace(&mut current, next);
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters in 3-D, the positive one shifted along the first axis.
    fn clusters() -> Vec<(Vec<f32>, bool)> {
        (0..20)
            .map(|i| {
                let jitter = |k: i32| ((i * 7 + k * 13) % 11) as f32 / 11.0 - 0.5;
                let positive = i % 2 == 0;
                let shift = if positive { 1.0 } else { -1.0 };
                (vec![shift + 0.6 * jitter(1), 0.8 * jitter(2), 0.8 * jitter(3)], positive)
            })
            .collect()
    }

    fn borrowed(data: &[(Vec<f32>, bool)]) -> Vec<(&[f32], bool)> {
        data.iter().map(|(x, y)| (x.as_slice(), *y)).collect()
    }

    #[test]
    fn separates_two_clusters_and_weights_the_informative_feature() {
        let data = clusters();
        let model = fit(&borrowed(&data), 0.01, None);
        for (x, y) in &data {
            assert_eq!(model.probability(x) > 0.5, *y, "{x:?}");
        }
        assert!(model.weights[0] > 3.0 * model.weights[1].abs().max(model.weights[2].abs()), "{model:?}");
    }

    #[test]
    fn reaches_the_optimum_where_the_gradient_vanishes() {
        let data = clusters();
        let examples = borrowed(&data);
        let l2 = 0.05;
        let model = fit(&examples, l2, None);
        let n = examples.len() as f64;
        let mut gradient = [0.0; 3];
        let mut bias_gradient = 0.0;
        for (x, y) in &examples {
            let residual = (model.probability(x) - if *y { 1.0 } else { 0.0 }) / n; // balanced: c = 1
            bias_gradient += residual;
            for (g, &v) in gradient.iter_mut().zip(x.iter()) {
                *g += residual * f64::from(v);
            }
        }
        for (g, w) in gradient.iter().zip(&model.weights) {
            assert!((g + l2 * w).abs() < 1e-6, "gradient {g} + l2·w {} is not zero", l2 * w);
        }
        assert!(bias_gradient.abs() < 1e-6);
    }

    #[test]
    fn stronger_regularisation_gives_smaller_weights_and_a_prior_pulls_towards_itself() {
        let data = clusters();
        let examples = borrowed(&data);
        let norm = |m: &Logistic| m.weights.iter().map(|w| w * w).sum::<f64>().sqrt();
        let loose = fit(&examples, 0.01, None);
        let tight = fit(&examples, 1.0, None);
        assert!(norm(&tight) < norm(&loose) / 2.0, "{} vs {}", norm(&tight), norm(&loose));
        // A prior that says the opposite, held strongly, wins over 20 examples.
        let opposite = Logistic { weights: vec![-5.0, 0.0, 0.0], bias: 0.0 };
        let pulled = fit(&examples, 100.0, Some(&opposite));
        assert!(pulled.weights[0] < -4.0, "{pulled:?}");
    }

    #[test]
    fn same_input_gives_the_same_bits_and_one_class_alone_keeps_the_prior() {
        let data = clusters();
        assert_eq!(fit(&borrowed(&data), 0.01, None), fit(&borrowed(&data), 0.01, None));
        let positives: Vec<(Vec<f32>, bool)> = data.into_iter().filter(|(_, y)| *y).collect();
        let prior = Logistic { weights: vec![1.0, 2.0, 3.0], bias: -0.5 };
        assert_eq!(fit(&borrowed(&positives), 0.01, Some(&prior)), prior);
    }
}
