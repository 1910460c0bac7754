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

/// Iterations of the accelerated gradient: 25·√κ (κ: the curvature bound over the penalty),
/// within these bounds. The error shrinks by about (1 − 1/√κ) per iteration, so this ends
/// ~e⁻²⁵ from the optimum.
fn iterations(condition_root: f64) -> usize {
    ((25.0 * condition_root).ceil() as usize).clamp(100, 3000)
}

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
/// Every feature vector must have the same length. With no examples, or a class missing,
/// there is no boundary to learn: the prior comes back unchanged.
pub fn fit(examples: &[(&[f32], bool)], l2: f64, prior: Option<&Logistic>) -> Logistic {
    let Some((first, _)) = examples.first() else {
        return prior.cloned().unwrap_or(Logistic { weights: Vec::new(), bias: 0.0 });
    };
    let dims = first.len();
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
    // Flat f64 rows and plain index loops: this is the training's whole cost.
    let rows: Vec<f64> = examples.iter().flat_map(|(x, _)| x.iter().map(|&v| f64::from(v))).collect();
    let targets: Vec<f64> = examples.iter().map(|(_, y)| if *y { 1.0 } else { 0.0 }).collect();
    let (mut weights, mut bias) = (prior.weights.clone(), prior.bias);
    let (mut previous_weights, mut previous_bias) = (weights.clone(), bias);
    let mut look = vec![0.0; dims];
    let mut gradient = vec![0.0; dims];
    for _ in 0..iterations(condition) {
        // Look-ahead point y = x + β(x − x_prev).
        for j in 0..dims {
            look[j] = weights[j] + momentum * (weights[j] - previous_weights[j]);
        }
        let look_bias = bias + momentum * (bias - previous_bias);
        gradient.iter_mut().for_each(|g| *g = 0.0);
        let mut bias_gradient = 0.0;
        for (i, row) in rows.chunks_exact(dims.max(1)).enumerate() {
            let mut z = look_bias;
            for j in 0..dims {
                z += look[j] * row[j];
            }
            let residual = weights_of[i] * (sigmoid(z) - targets[i]) / n;
            bias_gradient += residual;
            for j in 0..dims {
                gradient[j] += residual * row[j];
            }
        }
        previous_weights.copy_from_slice(&weights);
        previous_bias = bias;
        for j in 0..dims {
            weights[j] = look[j] - step * (gradient[j] + l2 * (look[j] - prior.weights[j]));
        }
        bias = look_bias - step * bias_gradient;
    }
    Logistic { weights, bias }
}

/// The same fit (zero prior) through inner products: `gram[a·m + b]` = x_a·x_b for the `m`
/// examples. The weights are Σ αₐ xₐ; returns (α, bias). Accelerated gradient steps on the
/// weights map one to one onto steps on α, so this reaches the same optimum as [`fit`] in
/// O(m²) per iteration instead of O(m·features) — what the leave-one-scene-out evaluation,
/// with its dozens of fits, needs.
pub fn fit_gram(gram: &[f64], labels: &[bool], l2: f64) -> (Vec<f64>, f64) {
    let m = labels.len();
    assert_eq!(gram.len(), m * m, "gram is not m×m");
    let n = m as f64;
    let positives = labels.iter().filter(|y| **y).count() as f64;
    let negatives = n - positives;
    if positives == 0.0 || negatives == 0.0 {
        return (vec![0.0; m], 0.0);
    }
    let weights_of: Vec<f64> = labels.iter().map(|&y| n / (2.0 * if y { positives } else { negatives })).collect();
    let curvature = 0.25 * (0..m).map(|a| weights_of[a] * (gram[a * m + a] + 1.0)).sum::<f64>() / n + l2;
    let step = 1.0 / curvature;
    let condition = (curvature / l2.max(1e-12)).sqrt();
    let momentum = (condition - 1.0) / (condition + 1.0);
    let targets: Vec<f64> = labels.iter().map(|&y| if y { 1.0 } else { 0.0 }).collect();
    let (mut alpha, mut bias) = (vec![0.0; m], 0.0);
    let (mut previous_alpha, mut previous_bias) = (alpha.clone(), bias);
    let mut look = vec![0.0; m];
    let mut residuals = vec![0.0; m];
    for _ in 0..iterations(condition) {
        for a in 0..m {
            look[a] = alpha[a] + momentum * (alpha[a] - previous_alpha[a]);
        }
        let look_bias = bias + momentum * (bias - previous_bias);
        let mut bias_gradient = 0.0;
        for a in 0..m {
            let row = &gram[a * m..(a + 1) * m];
            let mut z = look_bias;
            for b in 0..m {
                z += row[b] * look[b];
            }
            residuals[a] = weights_of[a] * (sigmoid(z) - targets[a]) / n;
            bias_gradient += residuals[a];
        }
        previous_alpha.copy_from_slice(&alpha);
        previous_bias = bias;
        for a in 0..m {
            alpha[a] = look[a] - step * (residuals[a] + l2 * look[a]);
        }
        bias = look_bias - step * bias_gradient;
    }
    (alpha, bias)
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
    fn the_inner_product_fit_reaches_the_same_model() {
        let data = clusters();
        let examples = borrowed(&data);
        let primal = fit(&examples, 0.02, None);
        let m = data.len();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>();
        let gram: Vec<f64> = (0..m * m).map(|i| dot(&data[i / m].0, &data[i % m].0)).collect();
        let labels: Vec<bool> = data.iter().map(|(_, y)| *y).collect();
        let (alpha, bias) = fit_gram(&gram, &labels, 0.02);
        for j in 0..3 {
            let w: f64 = (0..m).map(|a| alpha[a] * f64::from(data[a].0[j])).sum();
            assert!((w - primal.weights[j]).abs() < 1e-6, "weight {j}: {w} vs {}", primal.weights[j]);
        }
        assert!((bias - primal.bias).abs() < 1e-6);
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
