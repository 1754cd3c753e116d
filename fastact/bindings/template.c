/* fastact C kernels: ONE type-generic copy of every primitive and activation.

   Not compiled on its own: fastact/bindings/_generate.py pastes it once per dtype after defining
   real (float/double), ireal/ureal (the integer of the same width), FN(name) (name_f32/name_f64),
   K(c32, c64) (math.py's pick), L(c) (math.py's like), FMA/FABS/COPYSIGN, the bit-layout constants
   and the constants and polynomials of fastact/kernels/math.py and registry.py (emitted from those
   modules' own values, so there is one table of coefficients).

   A line-by-line port of kernels/math.py and registry.py: same operations in the same order, so
   results agree bitwise with the Numba backend. Rules that keep it so:
   - compiled with -ffp-contract=off: no FMA the Python source does not write (two_prod, two_sum and
     the Cody-Waite reduction depend on exact roundings), and never -ffast-math;
   - every literal that is not an integer goes through L()/K(): a bare 0.5 is a double and would
     promote a float computation;
   - selects (?: or pick_bits) and no data-dependent branches, so that `#pragma omp simd` loops
     vectorize; a clamp lets NaN through (x < lo and x > hi are false for NaN). */

static INLINE ireal FN(bits)(real x) { ireal i; __builtin_memcpy(&i, &x, sizeof i); return i; }
static INLINE real FN(from_bits)(ireal i) { real x; __builtin_memcpy(&x, &i, sizeof x); return x; }

/* --- helpers (math.py) ------------------------------------------------------------------------- */

/* take ? v : best on the bits: GCC cannot turn it back into a branch and if-convert each arm
   (a select whose arms divide became two divisions: mish) */
static INLINE real FN(pick_bits)(int take, real v, real best) {
    ireal mask = -(ireal)take;
    return FN(from_bits)((FN(bits)(v) & mask) | (FN(bits)(best) & ~mask));
}

/* math.clamp, on bits (NaN passes): with `x < lo ? lo : x` GCC threaded the clamp's cases through
   the code that follows and blended every derived value per case (gelu-tanh backward 123 -> 87
   instructions per 16 elements, sigmoid 48 -> 40, mish backward 113 -> 59; NOTES.md).
   clamp_select keeps the branchy form where that measured shorter (elu's expm1, softsign forward's
   range clamp) and in the light piecewise-linear kernels (hardtanh, hardswish; hardsigmoid's
   forward, which multiplies since math.sixth, takes the bits form: see there). */
static INLINE real FN(clamp)(real x, real lo, real hi) {
    x = FN(pick_bits)(x < lo, lo, x);
    return FN(pick_bits)(x > hi, hi, x);
}

static INLINE real FN(clamp_select)(real x, real lo, real hi) {
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

static INLINE real FN(two_prod)(real a, real b, real *err) {
    real p = a * b;
    *err = FMA(a, b, -p);
    return p;
}

static INLINE real FN(two_sum)(real a, real b, real *err) {
    real s = a + b;
    real bb = s - a;
    *err = (a - (s - bb)) + (b - bb);
    return s;
}

/* math.pow2_shifted: 2**(k + offset) for k in the shifter form ks = k + SHIFT (exp_reduce), the
   constant offset folded into the integer addition */
static INLINE real FN(pow2_shifted)(real ks, ireal offset) {
    ureal integer = (ureal)FN(bits)(ks) - (ureal)SHIFT_BITS + (ureal)offset;
    return FN(from_bits)((ireal)((integer + (ureal)EXP_BIAS) << MANT_BITS));
}

/* math.pow2: 2**k for integral k in the normal exponent range, k put in the shifter form */
static INLINE real FN(pow2)(real k) { return FN(pow2_shifted)(k + SHIFT, 0); }

/* u = m * 2**e with m in [sqrt(1/2), sqrt(2)), for positive normal u. */
static INLINE real FN(exponent_of)(real u) {
    ureal ix = (ureal)FN(bits)(u) + (ureal)(ONE_BITS - SQRT_HALF_BITS);
    ireal e = ((ireal)ix >> MANT_BITS) - EXP_BIAS;
    return FN(from_bits)((ireal)((ureal)e + (ureal)SHIFT_BITS)) - SHIFT;
}

static INLINE real FN(mantissa_of)(real u) {
    ureal ix = (ureal)FN(bits)(u) + (ureal)(ONE_BITS - SQRT_HALF_BITS);
    return FN(from_bits)((ireal)((ix & (ureal)MANT_MASK) + (ureal)SQRT_HALF_BITS));
}

/* --- exp --------------------------------------------------------------------------------------- */

static INLINE real FN(round_to_integer)(real x) { return (x + SHIFT) - SHIFT; }

/* returns k in the shifter form ks = k + SHIFT (math.exp_reduce), x log2e rounded by one FMA */
static INLINE real FN(exp_reduce)(real x, real *r) {
    real ks = FMA(x, LOG2E, SHIFT);
    real k = ks - SHIFT;
    real t = FMA(k, -LN2_HI, x);
    *r = FMA(k, -LN2_LO, t);
    return ks;
}

static INLINE real FN(expm1_reduced)(real r) {
    real q = EXP_Q(r);
    return FMA(r * r, q, r);
}

static INLINE real FN(scale_by_pow2)(real p, real ks) {
    real k = ks - SHIFT;
    real k_half = FN(round_to_integer)(k * L(0.5));
    return p * FN(pow2)(k_half) * FN(pow2)(k - k_half);
}

/* p * 2**k for k in [-190, 63] / [-1622, 423]: one exponent construction and a constant factor
   (math.py) */
static INLINE real FN(scale_by_pow2_nonpositive)(real p, real ks) {
    return p * FN(pow2_shifted)(ks, K(64, 600)) * K(5.421010862427522e-20, 2.409919865102884e-181);
}

/* math.exp_parts_q_in_range: exp_parts_q without its clamps (hi already within them) */
static INLINE real FN(exp_parts_q_in_range)(real hi, real lo, real *k) {
    real r;
    *k = FN(exp_reduce)(hi, &r);
    return FN(expm1_reduced)(r + lo);
}

/* exp(hi + lo) = (1 + q) * 2**k: returns q (-1 where exp is 0), stores k as ks = k + SHIFT. */
static INLINE real FN(exp_parts_q)(real hi, real lo, real *k) {
    real lowest = K(-118.0, -760.0);
    real x = FN(clamp)(hi, lowest, K(176.0, 1418.0));
    lo = x == hi ? lo : L(-0.0);  /* math.exp_parts_q: -0.0 folds away with a -0.0 lo */
    real q = FN(exp_parts_q_in_range)(x, lo, k);
    return hi < lowest ? L(-1.0) : q;
}

/* math.exp_parts_q_bounded_above: exp_parts_q without the upper clamp, for hi that cannot reach it */
static INLINE real FN(exp_parts_q_bounded_above)(real hi, real lo, real *k) {
    real lowest = K(-118.0, -760.0);
    real x = hi < lowest ? lowest : hi;
    lo = x == hi ? lo : L(-0.0);
    real q = FN(exp_parts_q_in_range)(x, lo, k);
    return hi < lowest ? L(-1.0) : q;
}

static INLINE real FN(exp_parts_bounded_above)(real hi, real lo, real *k) {
    return FN(exp_parts_q_bounded_above)(hi, lo, k) + L(1.0);
}

/* exp(hi + lo) = p * 2**k: returns p, stores k as ks = k + SHIFT. */
static INLINE real FN(exp_parts)(real hi, real lo, real *k) {
    return FN(exp_parts_q)(hi, lo, k) + L(1.0);
}

/* math.reduce_product: k from the rounded u w (stored in the shifter form in *ks, as k in *kk);
   returns r1 = fma(u, w, -k ln2s), k ln2s exact */
static INLINE real FN(reduce_product)(real u, real w, real *ks, real *kk) {
    *ks = FMA(u * w, LOG2E, SHIFT);
    *kk = *ks - SHIFT;
    return FMA(u, w, -(*kk * LN2_SHORT_HI));
}

/* math.exp_parts_q_of_exact_product: exp_parts_q(u w), returns q, stores k */
static INLINE real FN(exp_parts_q_of_exact_product)(real u, real w, real *k) {
    real kk;
    real r = FN(reduce_product)(u, w, k, &kk);
    return FN(expm1_reduced)(FMA(kk, -LN2_SHORT_LO, r));
}

/* math.exp_parts_q_of_product: exp_parts_q(u (wh + wl)), the reduction fused into the product;
   returns q, stores k */
static INLINE real FN(exp_parts_q_of_product)(real u, real wh, real wl, real *k) {
    real kk;
    real r = FN(reduce_product)(u, wh, k, &kk);
    r = r + FMA(kk, -LN2_SHORT_LO, u * wl);
    return FN(expm1_reduced)(r);
}

/* math.times_exp_parts: v (1 + q) 2**k for k <= 0, 1 + q joining v unrounded, the scaling last */
static INLINE real FN(times_exp_parts)(real v, real q, real k) {
    return FN(scale_by_pow2_nonpositive)(FMA(v, q, v), k);
}

/* math.finite: dy clamped to the finite range, NaN passing (the factor of small correction terms) */
static INLINE real FN(finite)(real dy) {
    return FN(clamp)(dy, -K(3.4028234663852886e38, 1.7976931348623157e308),
                     K(3.4028234663852886e38, 1.7976931348623157e308));
}

/* math.times_one_plus: dy (1 + t) with one rounding, fma(dyc, t, dy) (the caller gives +-0 dy's
   sign) */
static INLINE real FN(times_one_plus)(real dy, real t, real dyc) {
    return FMA(dyc, t, dy);
}

/* math.times_exp_parts_by: dy v (1 + q) 2**k = fma(dy, u, dyc (u q)), u = v 2**k, dyc = finite(dy):
   dy u exact inside the FMA, one rounding fewer than dy * times_exp_parts(v, q, k) */
static INLINE real FN(times_exp_parts_by)(real dy, real v, real q, real k, real dyc) {
    real u = FN(scale_by_pow2_nonpositive)(v, k);
    return FMA(dy, u, dyc * (u * q));  /* (the caller gives +-0 dy u's sign) */
}

static INLINE real FN(exp_hilo)(real hi, real lo) {
    real k;
    real p = FN(exp_parts)(hi, lo, &k);
    return FN(scale_by_pow2)(p, k);
}

static INLINE real FN(exp_times)(real x, real c) {
    real k;
    real p = FN(exp_parts)(x, L(-0.0), &k);
    return FN(scale_by_pow2)(p * c, k);
}

static INLINE real FN(exp)(real x) { return FN(exp_hilo)(x, L(-0.0)); }

static INLINE real FN(exp_nonpositive)(real x) {
    real k;
    real p = FN(exp_parts_bounded_above)(x, L(-0.0), &k);
    return FN(scale_by_pow2_nonpositive)(p, k);
}

/* math.exp_difference: e^(v - best) for v <= best, the difference as an exact double-word */
static INLINE real FN(exp_difference)(real v, real best) {
    real lo, k;
    real hi = FN(two_sum)(v, -best, &lo);
    real p = FN(exp_parts)(hi, lo, &k);
    return FN(scale_by_pow2_nonpositive)(p, k);
}

/* math.expm1_bounded: e^x - 1 for x in [-30, 18] / [-50, 38.2], one power of two (tanh, elu) */
static INLINE real FN(expm1_bounded)(real x) {
    real r;
    real ks = FN(exp_reduce)(x, &r);
    real s = FN(pow2_shifted)(ks, 0);
    return FMA(s, FN(expm1_reduced)(r), s - L(1.0));
}

/* math.expm1_nonpositive_times: c (e^x - 1) for x <= 0 (elu, selu), one power of two */
static INLINE real FN(expm1_nonpositive_times)(real x, real c) {
    /* (x >= 0 to 0, not x > 0: the same bits, +0 and -0 give +0 either way, and the condition
       of elu's select, which GCC then folds this clamp into; with x > 0 here and x >= 0 there
       it kept both, 5 compares: elu forward 25 -> 30 instructions) */
    x = x < K(-30.0, -50.0) ? K(-30.0, -50.0) : x;
    return FN(expm1_bounded)(x >= L(0.0) ? L(0.0) : x) * c;
}

/* math.expm1_times */
static INLINE real FN(expm1_times)(real x, real c) {
    real r;
    real k = FN(exp_reduce)(FN(clamp)(x, K(-30.0, -50.0), K(176.0, 1418.0)), &r) - SHIFT;
    real k2 = FN(round_to_integer)(k * L(0.5));
    real s1 = FN(pow2)(k - k2);
    return (FMA(s1, FN(expm1_reduced)(r), s1 - FN(pow2)(-k2)) * c) * FN(pow2)(k2);
}

/* --- log1p ------------------------------------------------------------------------------------- */

static INLINE real FN(log1p)(real x) {
    real xx = FN(clamp)(x, L(0.0), K(1e38, 1e307));
    real u = xx + L(1.0);
    real e = FN(exponent_of)(u);
    real f = FN(mantissa_of)(u) - L(1.0);
    real s = f / (L(2.0) + f);
    real z = s * s;
    real big_r = z * LOG_R(z);
    real half_f2 = L(0.5) * f * f;
    real log_m = f - (half_f2 - s * (half_f2 + big_r));
    real correction = (xx - (u - L(1.0))) / u;
    real y = FMA(e, LN2_HI, FMA(e, LN2_LO, correction) + log_m);
    return x > K(1e38, 1e307) ? x : y;
}

/* log(1 + x) for x in [0, 1]: division-free polynomials, float32 x Q(x), float64 u + u^2 P(u)
   with u = x, or log 2 + that with u = (x - 1) / 2 above 1/2 (math.log1p_unit). */
static INLINE real FN(log1p_unit)(real x) {
#if IS_SINGLE
    return x * LOG1P_UNIT_Q(x);
#else
    int upper = x > L(0.5);  /* math.log1p_unit: log 2 + log1p((x - 1) / 2) above 1/2 */
    real u = upper ? (x - L(1.0)) * L(0.5) : x;
    real y = FMA(u, u * LOG1P_UNIT_P(u), u);
    return upper ? L(0.6931471805599453) + (L(2.3190468138462996e-17) + y) : y;
#endif
}

/* --- functions built from exp ------------------------------------------------------------------ */

/* math.sigmoid: 1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|) */
static INLINE real FN(sigmoid)(real x) {
    real k;
    real p = FN(exp_parts_bounded_above)(-FABS(x), L(-0.0), &k);
    real e = FN(scale_by_pow2_nonpositive)(p, k);
    real r = L(1.0) / (L(1.0) + e);
    return x >= L(0.0) ? r : e * r;
}

/* math.sigmoid_times: c sigmoid(z) from exp(-|z|) = p 2**k and z >= 0 */
static INLINE real FN(sigmoid_times)(real p, real k, int positive, real c) {
    real d = L(1.0) + FN(scale_by_pow2_nonpositive)(p, k);
    real q = FN(pick_bits)(positive, c, p * c) / d;  /* one division, not one in each arm */
    return positive ? q : FN(scale_by_pow2_nonpositive)(q, k);
}

/* math.sigmoid_plus_scaled_derivative: sigmoid(z) + c sigmoid(z) sigmoid(-z) from exp(-|z|) =
   v = (1 + q) 2**k and positive = z >= 0, for c = c + c_lo, over one denominator in the input's
   precision: v ((1 + c) + v) / (1 + v)^2 (z < 0, before exp's final scaling) or
   (1 + v (1 + c)) / (1 + v)^2 (z >= 0). */
static INLINE real FN(sigmoid_plus_scaled_derivative)(real q, real k, int positive, real c,
                                                       real c_lo) {
    real one = L(1.0);
    real v = FN(scale_by_pow2_nonpositive)(q + one, k);
    real one_plus_c = one + c;
    real numerator = positive ? FMA(v, one_plus_c + c_lo, one) : one_plus_c + (v + c_lo);
    real ratio = numerator / FMA(v, v + L(2.0), one);
    /* on bits, or GCC puts the division in both arms (silu +5-9%; gelu-tanh too since the clamps
       are on bits, +4-12%; before, gelu-tanh lost 5-12% with it: NOTES) */
    return FN(pick_bits)(positive, ratio, FN(times_exp_parts)(ratio, q, k));
}

/* math.sigmoid_plus_scaled_derivative_compensated_by: dy times the same, with the numerator, the
   denominator and their quotient as double-words (2Sum, Fast2Sum and the FMA's residual, one
   reciprocal and the exact remainder), one final rounding and dy times its sign (gelu-tanh: 4.03
   -> 2.1 ulp for every dy) */
static INLINE real FN(sigmoid_plus_scaled_derivative_compensated_by)(real dy, real q, real k,
                                                                     int positive, real c,
                                                                     real c_lo) {
    real one = L(1.0), two = L(2.0);
    real v = FN(scale_by_pow2_nonpositive)(q + one, k);
    real one_plus_c = one + c;
    real a = FN(pick_bits)(positive, one, one_plus_c);
    real b = FN(pick_bits)(positive, v * (one_plus_c + c_lo), v + c_lo);
    real nl;
    real nh = FN(two_sum)(a, b, &nl);
    real s2 = v + two;
    real e2 = (two - s2) + v;
    real dh = FMA(v, s2, one);
    real dl = FMA(v, e2, FMA(v, s2, one - dh));
    real reciprocal = one / dh;
    real rh = nh * reciprocal;
    real rl = FMA(-rh, dl, FMA(-rh, dh, nh) + nl) * reciprocal;
    real dyc = FN(finite)(dy);
    real uh = FN(scale_by_pow2_nonpositive)(rh, k), ul = FN(scale_by_pow2_nonpositive)(rl, k);
    real product = FN(pick_bits)(positive, FMA(dy, rh, dyc * rl),
                                 FMA(dy, uh, dyc * FMA(uh, q, FMA(ul, q, ul))));
    return COPYSIGN(product, dy * FN(pick_bits)(positive, rh, uh));
}

static INLINE real FN(tanh)(real x) {
    real a = FABS(x);
    a = a > K(9.0, 19.1) ? K(9.0, 19.1) : a;  /* NaN passes */
    real e = FN(expm1_bounded)(a + a);
    return COPYSIGN(e / (e + L(2.0)), x);
}

static INLINE real FN(softplus)(real x) {
    real positive_part = x < L(0.0) ? L(0.0) : x;
    return positive_part + FN(log1p_unit)(FN(exp_nonpositive)(-FABS(x)));
}

/* math.mish_times_x: x * tanh(softplus(x)) */
static INLINE real FN(mish_times_x)(real x) {
    real k;
    real xs = FN(clamp)(x, K(-200.0, -1000.0), K(20.0, 40.0));
    real p = FN(exp_parts_bounded_above)(xs, L(-0.0), &k);  /* xs <= 20: GCC kept the upper clamp */
    real e = FN(scale_by_pow2_nonpositive)(p, k);  /* k <= 29 / 58: within its range */
    int negative = xs < L(0.0);
    real numerator = FN(pick_bits)(negative, FMA(e, e, e), L(2.0));  /* one division, not two */
    real v = L(1.0) - numerator / FMA(e, e + L(2.0), L(2.0));
    return negative ? FN(scale_by_pow2_nonpositive)(p * xs * v, k) : xs * v;
}

/* --- the normal distribution, for GELU --------------------------------------------------------- */

static INLINE real FN(normal_tail_scaled)(real a) {
    /* t = 1/(1 + c a) compensated: exact 1/(1 + c a) = t (1 + dl) to first order */
    real c = NORMAL_TAIL_C, one = L(1.0);
    real d = FMA(c, a, one);
    real t = one / d;
    real dl = FMA(-FMA(c, a, one - d), t, FMA(-d, t, one));
    real t_lo = t * dl;  /* 1/(1 + c a) = t + t_lo */
    real s = FMA(L(2.0), t_lo, FMA(L(2.0), t, -one));
    real p = NORMAL_TAIL_P(s);
    return FMA(t, p, t_lo * p);
}

/* math.normal_parts: na = -|x| clamped to [-NORMAL_CLAMP, 0] (returned), exp(-na^2/2) =
   (1 + q) 2**k (stores q, k) and Phi(na) = (1 + q) g 2**k (stores g). */
static INLINE real FN(normal_parts)(real x, real *q, real *k, real *g) {
    real na = -FABS(x);
    na = FN(pick_bits)(na < -NORMAL_CLAMP, -NORMAL_CLAMP, na);
    *q = FN(exp_parts_q_of_exact_product)(na, L(-0.5) * na, k);
    *g = FN(normal_tail_scaled)(-na);
    return na;
}

/* --- registry.py: one function per scalar function of the registry, same name ------------------ */

static INLINE real FN(derivative_select)(real saved, real threshold, real below, real above) {
    return saved > threshold ? above : (saved <= threshold ? below : saved);
}


static INLINE real FN(sigmoid_forward)(real x) { return FN(sigmoid)(x); }

static INLINE real FN(sigmoid_backward_from_output)(real dy, real y) {
    return dy * (y * (L(1.0) - y));
}

static INLINE real FN(tanh_forward)(real x) { return FN(tanh)(x); }

static INLINE real FN(tanh_backward_from_output)(real dy, real y) {
    return dy * ((L(1.0) - y) * (L(1.0) + y));
}

static INLINE real FN(elu_forward)(real x, real alpha) {
    return x >= L(0.0) ? x : FN(expm1_nonpositive_times)(x, alpha);  /* (zeros: registry's) */
}

static INLINE real FN(elu_backward_from_output)(real dy, real y, real alpha) {
    return dy * FN(derivative_select)(y, L(0.0), y + alpha, L(1.0));
}

static INLINE real FN(elu_backward_from_input)(real dy, real x, real alpha) {
    return x > L(0.0) ? dy : (x <= L(0.0) ? FN(exp_times)(x, dy * alpha) : x);
}

static INLINE real FN(selu_forward)(real x) {
    return SELU_SCALE * FN(elu_forward)(x, SELU_ALPHA);
}

static INLINE real FN(selu_backward_from_output)(real dy, real y) {
    return dy * FN(derivative_select)(y, L(0.0), y + SELU_SCALE_ALPHA, SELU_SCALE);
}

/* celu: registry.over_alpha's test (no division where alpha is 1), and celu_forward's elu for
   alpha = 1, are _generate.UNSWITCHED's copy of the loop with alpha = 1 (GCC folds x / 1 away;
   the forward's copy calls elu_forward) */
static INLINE real FN(celu_forward)(real x, real alpha) {
    return FN(pick_bits)(x >= L(0.0), x, FN(expm1_times)(x / alpha, alpha));
}

static INLINE real FN(celu_backward_from_output)(real dy, real y, real alpha) {
    return dy * FN(derivative_select)(y, L(0.0), y / alpha + L(1.0), L(1.0));
}

static INLINE real FN(celu_backward_from_input)(real dy, real x, real alpha) {
    return x > L(0.0) ? dy : (x <= L(0.0) ? FN(exp_times)(x / alpha, dy) : x);
}

static INLINE real FN(gelu_forward)(real x) {
    real q, k, g;
    real na = FN(normal_parts)(x, &q, &k, &g);
    real tail = FN(times_exp_parts)(g * na, q, k);
    return x < L(0.0) ? tail : x + tail;
}

static INLINE real FN(gelu_backward_from_input)(real dy, real x) {
    real q, k, g;
    real na = FN(normal_parts)(x, &q, &k, &g);
    real w = FN(times_exp_parts)(FMA(na, INV_SQRT_2PI, g), q, k);
    /* dy (1 - w) with one rounding (math.times_one_plus), dy's sign at dy = +-0 */
    return FN(pick_bits)(x < L(0.0), dy * w,
                         COPYSIGN(FN(times_one_plus)(dy, -w, FN(finite)(dy)), dy));
}

/* registry.gelu_tanh_sum: x^2 = p + pe, k3 p = a + ae, k1 + a = wh + we; returns wh. The same
   exact error by Knuth's two_sum: GCC makes Fast2Sum's max and min compares and blends (65
   instructions per 16 elements with them, 64 with two_sum) */
static INLINE real FN(gelu_tanh_sum)(real x, real *p, real *pe, real *a, real *ae, real *we) {
    *p = FN(two_prod)(x, x, pe);
    *a = FN(two_prod)(GELU_TANH_K3_HI, *p, ae);
    return FN(two_sum)(GELU_TANH_K1_HI, *a, we);
}

/* registry.gelu_tanh_w: w = k1 + k3 x^2 as a double-word (returns wh, stores wl); z = x w */
static INLINE real FN(gelu_tanh_w)(real x, real *wl) {
    real p, pe, a, ae, we;
    real wh = FN(gelu_tanh_sum)(x, &p, &pe, &a, &ae, &we);
    *wl = we + (ae + FMA(GELU_TANH_K3_HI, pe, FMA(GELU_TANH_K3_LO, p, GELU_TANH_K1_LO)));
    return wh;
}

/* registry.gelu_tanh_argument: the same w (its low part summed as we + (tail + k1l)) and
   k3 x^2 = a + tail */
static INLINE real FN(gelu_tanh_argument)(real x, real *wl, real *a, real *tail) {
    real p, pe, ae, we;
    real wh = FN(gelu_tanh_sum)(x, &p, &pe, a, &ae, &we);
    *tail = ae + (GELU_TANH_K3_HI * pe + GELU_TANH_K3_LO * p);
    *wl = we + (*tail + GELU_TANH_K1_LO);
    return wh;
}

static INLINE real FN(gelu_tanh_clamp)(real x) {
    return FN(clamp)(x, -K(11.5, 22.0), K(11.5, 22.0));
}

static INLINE real FN(gelu_tanh_forward)(real x) {
    real wl, k;
    real xs = FN(gelu_tanh_clamp)(x);
    real wh = FN(gelu_tanh_w)(xs, &wl);
    real q = FN(exp_parts_q_of_product)(-FABS(xs), wh, wl, &k);
    return FN(sigmoid_times)(q + L(1.0), k, xs >= L(0.0), x > xs ? x : xs);
}

static INLINE real FN(gelu_tanh_backward_from_input)(real dy, real x) {
    real wl, a, tail, k;
    real xs = FN(gelu_tanh_clamp)(x);
    real wh = FN(gelu_tanh_argument)(xs, &wl, &a, &tail);
    real q = FN(exp_parts_q_of_product)(-FABS(xs), wh, wl, &k);
    real hi = xs * wh;
    real lo = FMA(xs, wh, -hi) + xs * wl;
    real c = FMA(xs + xs, a, hi);  /* x z'(x) = z + 2 x (k3 x^2) */
    real c_lo = FMA(xs + xs, tail, lo) + (hi - (c - (xs + xs) * a));
    return FN(sigmoid_plus_scaled_derivative_compensated_by)(dy, q, k, xs >= L(0.0), c, c_lo);
}

static INLINE real FN(silu_forward)(real x) {
    real k, lowest = K(-1e30, -1e300);
    real p = FN(exp_parts_bounded_above)(-FABS(x), L(-0.0), &k);
    return FN(sigmoid_times)(p, k, x >= L(0.0), x > lowest ? x : lowest);
}

static INLINE real FN(silu_backward_from_input)(real dy, real x) {
    real k, big = K(1e30, 1e300);
    real q = FN(exp_parts_q_bounded_above)(-FABS(x), L(-0.0), &k);
    real c = FN(clamp)(x, -big, big);
    return dy * FN(sigmoid_plus_scaled_derivative)(q, k, x >= L(0.0), c, L(0.0));
}

static INLINE real FN(mish_forward)(real x) {
    /* both selects on the bits: as ?: and clamp_select, GCC threaded the clamp's and this
       select's cases through mish_times_x and masked its operations per case (55 -> 49
       instructions per 16 elements; Zen 4 VM, 2 threads, two builds in one process:
       2^26 20.2-20.6 -> 21.5-22.0 GB/s, 2^20 19.1 -> 20.0) */
    return FN(pick_bits)(x > K(20.0, 40.0), x, FN(mish_times_x)(x));
}

static INLINE real FN(mish_backward_from_input)(real dy, real x) {
    /* over one denominator in v = e^-|x| (registry.py): coefficients reversed per sign */
    real k;
    real xs = FN(clamp)(x, K(-118.0, -760.0), K(20.0, 40.0));
    real q = FN(exp_parts_q_in_range)(-FABS(xs), L(-0.0), &k);
    real v = FN(scale_by_pow2_nonpositive)(q + L(1.0), k);
    int negative = xs < L(0.0);
    real four_x = L(4.0) * xs;
    real below = FMA(v, FMA(v, v + L(4.0), four_x + L(6.0)), four_x + L(4.0));
    real above = v * v * FMA(v, FMA(L(-4.0), v, four_x - L(4.0)), four_x - L(2.0));
    real denominator = FMA(v, FMA(v, FMA(v, FMA(v, negative ? L(1.0) : L(4.0), negative ? L(4.0) : L(8.0)),
                                         L(8.0)), negative ? L(8.0) : L(4.0)), negative ? L(4.0) : L(1.0));
    /* the clamp and these two selects on bits: with branches GCC threaded the clamp's three cases
       through the whole function (113 instructions per 16 elements, 34 of them blends); 59 now */
    real ratio = FN(pick_bits)(negative, below, above) / denominator;
    real dyc = FN(finite)(dy);  /* dy (1 + ratio), dy ratio (1 + q) 2**k: one final rounding */
    real fused = FN(pick_bits)(negative, FN(times_exp_parts_by)(dy, ratio, q, k, dyc),
                               FN(times_one_plus)(dy, ratio, dyc));
    return COPYSIGN(fused, dy * FN(pick_bits)(negative, ratio, L(1.0)));  /* dy = +-0: as gelu's */
}

static INLINE real FN(softplus_forward)(real x, real beta, real threshold) {
    real z = beta * x;
    real s = FN(softplus)(z);
    return z > threshold ? x : (beta == L(1.0) ? s : s / beta);
}

static INLINE real FN(softplus_backward_from_input)(real dy, real x, real beta, real threshold) {
    real z = beta * x;
    return z > threshold ? dy : dy * FN(sigmoid)(z);
}

static INLINE real FN(logsigmoid_forward)(real x) { return -FN(softplus)(-x); }

static INLINE real FN(logsigmoid_backward_from_input)(real dy, real x) {
    return dy * FN(sigmoid)(-x);
}

static INLINE real FN(relu_forward)(real x) { return x < L(0.0) ? L(0.0) : x; }

static INLINE real FN(relu_backward_from_output)(real dy, real y) {
    return dy * FN(derivative_select)(y, L(0.0), L(0.0), L(1.0));
}

static INLINE real FN(leaky_relu_forward)(real x, real negative_slope) {
    return x > L(0.0) ? x : x * negative_slope;
}

static INLINE real FN(leaky_relu_backward)(real dy, real saved, real negative_slope) {
    return dy * FN(derivative_select)(saved, L(0.0), negative_slope, L(1.0));
}

static INLINE real FN(prelu_grad_weight_term)(real dy, real x) {
    return x > L(0.0) ? L(0.0) : dy * x;
}

static INLINE real FN(hardtanh_forward)(real x, real min_val, real max_val) {
    return FN(clamp_select)(x, min_val, max_val);
}

static INLINE real FN(hardtanh_backward_from_input)(real dy, real x, real min_val, real max_val) {
    real outside = ((x <= min_val) | (x >= max_val)) ? L(0.0) : x;
    return dy * (((x > min_val) & (x < max_val)) ? L(1.0) : outside);
}

/* math.sixth: t / 6 correctly rounded by Markstein's correction of t * RN(1/6) (t = +0 or finite
   |t| >= 2^-100; hardsigmoid's t is 0 or at least 2^-22), three FMA-unit operations, no divide */
static INLINE real FN(sixth)(real t) {
    real c = L(1.0) / L(6.0), y = t * c;
    return FMA(FMA(-y, L(6.0), t), c, y);
}

/* the clamp on bits: with clamp_select GCC blended its cases into sixth's FMA chain (12 vector
   instructions per 16 elements against 9; 2^20 float32, one thread: 122 against 97 us) */
static INLINE real FN(hardsigmoid_forward)(real x) {
    return FN(sixth)(FN(clamp)(x + L(3.0), L(0.0), L(6.0)));
}

static INLINE real FN(hardsigmoid_backward_from_input)(real dy, real x) {
    return FN(hardtanh_backward_from_input)(dy, x, L(-3.0), L(3.0)) / L(6.0);
}

static INLINE real FN(hardswish_forward)(real x) {
    real y = x * (FN(clamp_select)(x + L(3.0), L(0.0), L(6.0)) / L(6.0));
    return x < L(-3.0) ? L(0.0) : y;
}

static INLINE real FN(hardswish_backward_from_input)(real dy, real x) {
    /* registry's pieces, the inside one computed for every x (NaN stays NaN: both tests false) */
    real d = x >= L(3.0) ? L(1.0) : x / L(3.0) + L(0.5);
    return dy * (x <= L(-3.0) ? L(0.0) : d);
}

/* the same, as registry.py writes it: the form of its streamed blocks (_generate.STREAMED_SCALAR) */
static INLINE real FN(hardswish_backward_from_input_streamed)(real dy, real x) {
    real outer = x <= L(-3.0) ? L(0.0) : (x >= L(3.0) ? L(1.0) : x);  /* NaN stays NaN */
    int inside = (x > L(-3.0)) & (x < L(3.0));
    return dy * (inside ? x / L(3.0) + L(0.5) : outer);
}

static INLINE real FN(threshold_forward)(real x, real threshold, real value) {
    return x <= threshold ? value : x;
}

static INLINE real FN(threshold_backward_from_input)(real dy, real x, real threshold, real value) {
    (void)value;
    return dy * FN(derivative_select)(x, threshold, L(0.0), L(1.0));
}

static INLINE real FN(softsign_forward)(real x) {
    real xs = FN(clamp_select)(x, K(-1e30, -1e300), K(1e30, 1e300));
    return xs / (L(1.0) + FABS(xs));
}

static INLINE real FN(softsign_backward_from_input)(real dy, real x) {
#if IS_SINGLE
    double a = 1.0 + __builtin_fabs((double)x);  /* one rounding; the square cannot overflow */
    return dy * (real)(1.0 / (a * a));
#endif
    real r = L(1.0) / (L(1.0) + FABS(x));
    return dy * (r * r);
}

/* --- row loops (kernels/loops.py): [lo, hi) of the outer index (the thread pool splits it)  */

/* (max, index of its first occurrence); NaN if the row has a NaN (index of the first NaN). */
static INLINE real FN(row_max)(const real *row, int64_t n, int64_t *where) {
    real best = row[0];
    int64_t at = 0;
    for (int64_t j = 1; j < n; j++) {
        real v = row[j];
        if ((v > best || v != v) && best == best) {
            best = v;
            at = j;
        }
    }
    *where = at;
    return best;
}

typedef struct {
    const real *x, *w, *dy;
    real *out;
    double *grad_weight_rows;
    int64_t channels, inner;
} FN(prelu_args);

static void FN(prelu_forward_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(prelu_args) *a = args;
    for (int64_t r = lo; r < hi; r++) {
        real w = a->w[r % a->channels];
        const real *x = a->x + r * a->inner;
        real *out = a->out + r * a->inner;
#pragma omp simd
        for (int64_t j = 0; j < a->inner; j++) out[j] = FN(leaky_relu_forward)(x[j], w);
    }
}

/* result = the float64 sum of term over j in [0, n), with 32 independent partial sums: GCC keeps
   one accumulator for an omp simd reduction, a chain of 4-cycle adds (LLVM interleaves four). */
#define FA_SUM64(result, n, j, term) do {                                                  \
        double acc_[32] = {0.0}, sum_ = 0.0;                                               \
        int64_t base_ = 0;                                                                 \
        for (; base_ + 32 <= (n); base_ += 32)                                             \
            for (int i_ = 0; i_ < 32; i_++) {                                              \
                int64_t j = base_ + i_;                                                    \
                acc_[i_] += (term);                                                        \
            }                                                                              \
        for (int64_t j = base_; j < (n); j++) sum_ += (term);                              \
        /* a tree, constant bounds so that GCC vectorizes it: 32 chained adds took 128 cycles */ \
        for (int i_ = 0; i_ < 16; i_++) acc_[i_] += acc_[i_ + 16];                         \
        for (int i_ = 0; i_ < 8; i_++) acc_[i_] += acc_[i_ + 8];                           \
        for (int i_ = 0; i_ < 4; i_++) acc_[i_] += acc_[i_ + 4];                           \
        (result) = sum_ + ((acc_[0] + acc_[2]) + (acc_[1] + acc_[3]));                     \
    } while (0)

static void FN(prelu_backward_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(prelu_args) *a = args;
    for (int64_t r = lo; r < hi; r++) {
        real w = a->w[r % a->channels];
        const real *x = a->x + r * a->inner, *dy = a->dy + r * a->inner;
        real *dx = a->out + r * a->inner;
        double acc = 0.0;
        /* loops.prelu_backward_rows: by blocks, a block's sum and then its dx while it is in L1;
           in place (dx is dy or x) the sum must read the inputs first: it goes first */
        for (int64_t j0 = 0; j0 < a->inner; j0 += 2048) {
            int64_t m = a->inner - j0 < 2048 ? a->inner - j0 : 2048;
            const real *g = dy + j0, *v = x + j0;
            real *d = dx + j0;
            double block;
            FA_SUM64(block, m, j, (double)FN(prelu_grad_weight_term)(g[j], v[j]));
            acc += block;
#pragma omp simd
            for (int64_t j = 0; j < m; j++) d[j] = FN(leaky_relu_backward)(g[j], v[j], w);
        }
        a->grad_weight_rows[r] = acc;
    }
}

/* loops.prelu_forward_cols / prelu_backward_cols: rows of n elements, each with its own weight
   w[j] (the per-channel weights repeated to the row's length); the backward's float64 column
   sums of a block of block_rows rows go to partial[b * n + j] (one writer per block) */
typedef struct {
    const real *x, *w, *dy;
    real *out;
    double *partial;
    int64_t n, block_rows, n_rows;
} FN(prelu_cols_args);

static void FN(prelu_forward_cols_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(prelu_cols_args) *a = args;
    for (int64_t r = lo; r < hi; r++) {
        const real *x = a->x + r * a->n;
        real *out = a->out + r * a->n;
#pragma omp simd
        for (int64_t j = 0; j < a->n; j++) out[j] = FN(leaky_relu_forward)(x[j], a->w[j]);
    }
}

static void FN(prelu_backward_cols_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(prelu_cols_args) *a = args;
    const int64_t n = a->n;
    for (int64_t b = lo; b < hi; b++) {
        double *acc = a->partial + b * n;
        for (int64_t j = 0; j < n; j++) acc[j] = 0.0;
        int64_t last = (b + 1) * a->block_rows < a->n_rows ? (b + 1) * a->block_rows : a->n_rows;
        for (int64_t r = b * a->block_rows; r < last; r++)
            for (int64_t j0 = 0; j0 < n; j0 += 2048) {  /* sums first: dx may be dy or x */
                int64_t m = n - j0 < 2048 ? n - j0 : 2048;
                const real *g = a->dy + r * n + j0, *v = a->x + r * n + j0, *w = a->w + j0;
                real *d = a->out + r * n + j0;
                double *s = acc + j0;
#pragma omp simd
                for (int64_t j = 0; j < m; j++)
                    s[j] += (double)FN(prelu_grad_weight_term)(g[j], v[j]);
#pragma omp simd
                for (int64_t j = 0; j < m; j++) d[j] = FN(leaky_relu_backward)(g[j], v[j], w[j]);
            }
    }
}

typedef struct {
    const real *x, *y;  /* softmax: x; backward: dy (x) and y */
    real *out;
    int64_t n;
} FN(softmax_args);

#define FA_BLOCK 1024


/* loops.row_max: the largest entry, NaN ignored (a NaN makes the row NaN through the sums); a
   reduction the vectorizer takes, unlike row_max's arg-max (4 cycles per element) */
static INLINE real FN(row_maxnum)(const real *row, int64_t n) {
    /* 256 bytes of independent maxima per step: GCC keeps one accumulator for a max reduction,
       a chain of 4-cycle vmaxps (LLVM interleaves four) */
    enum { W = 256 / (int)sizeof(real) };
    real best = row[0], acc[W];
    int64_t j = 0;
    if (n >= W) {
        for (int i = 0; i < W; i++) acc[i] = row[i];
        for (j = W; j + W <= n; j += W)
            for (int i = 0; i < W; i++) acc[i] = row[j + i] > acc[i] ? row[j + i] : acc[i];
#pragma omp simd reduction(max:best)
        for (int i = 0; i < W; i++) best = acc[i] > best ? acc[i] : best;
    }
#pragma omp simd reduction(max:best)
    for (int64_t k = j; k < n; k++) best = row[k] > best ? row[k] : best;
    return best;
}

/* loops.row_exp: dst = exp(row - best) for a block (row - best <= 0, as a double-word) */
static INLINE void FN(row_exp)(const real *row, real best, real *dst, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) dst[j] = FN(exp_difference)(row[j], best);
}

/* loops.prefetch_ahead with ahead = n: the next row's cache lines, while this one computes */
static INLINE void FN(prefetch_row)(const real *row, int64_t n) {
    for (int64_t j = 0; j < n; j += 64 / (int64_t)sizeof(real)) __builtin_prefetch(row + j, 0, 3);
}

FA_WIDE static void FN(softmax_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(softmax_args) *a = args;
    int64_t n = a->n;
    for (int64_t r = lo; r < hi; r++) {
        const real *x = a->x + r * n;
        real *out = a->out + r * n;
        real best = FN(row_maxnum)(x, n);
        FN(row_exp)(x, best, out, n);
        double total;
        FA_SUM64(total, n, j, (double)out[j]);
        real inverse = (real)(1.0 / total);
#pragma omp simd
        for (int64_t j = 0; j < n; j++) out[j] = out[j] * inverse;
    }
}

/* loops.row_others over a row, block by block: the sum of the exps of all but one of the entries
   equal to 1 (the max's exp(0)), NaN entries counted (as NaN) */
static INLINE double FN(row_others)(const real *x, real best, int64_t n, real *buffer) {
    double others = 0.0;
    int64_t ones = 0;
    for (int64_t j0 = 0; j0 < n; j0 += FA_BLOCK) {
        int64_t j1 = j0 + FA_BLOCK < n ? j0 + FA_BLOCK : n;
        FN(row_exp)(x + j0, best, buffer, j1 - j0);
#pragma omp simd reduction(+:others, ones)
        for (int64_t j = 0; j < j1 - j0; j++) {
            others += buffer[j] != L(1.0) ? (double)buffer[j] : 0.0;
            ones += buffer[j] == L(1.0);
        }
    }
    return others + (double)(ones - 1);
}

/* log_softmax backward's row sum of dy in float64 (loops.row_sum), float32 on AVX-512 converted
   eight at a time as they are loaded, as row_dot: GCC's omp simd loop had converted the upper
   eight of sixteen after an extract */
static INLINE double FN(row_sum)(const real *dy, int64_t n) {
    double total = 0.0;
#if IS_SINGLE && defined(__AVX512F__)
    __m512d first = _mm512_setzero_pd(), second = _mm512_setzero_pd();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        first = _mm512_add_pd(first, _mm512_cvtps_pd(_mm256_loadu_ps(dy + j)));
        second = _mm512_add_pd(second, _mm512_cvtps_pd(_mm256_loadu_ps(dy + j + 8)));
    }
    total = _mm512_reduce_add_pd(_mm512_add_pd(first, second));
    for (; j < n; j++) total += (double)dy[j];  /* the rest of the row (n % 16) */
#else
#pragma omp simd reduction(+:total)
    for (int64_t j = 0; j < n; j++) total += (double)dy[j];
#endif
    return total;
}

/* x - max - log1p(sum of the other terms). float32 (loops.log_softmax_rows): the exps go to the
   output row (its lines then arrive while the exps compute; 2^26, one thread: 0.84 -> 1.2
   Gelem/s), or to a block buffer when out is x, and 1 + the others is one float64 sum unless
   they are small; float64 sums the others block by block (row_others). The next row of x is
   prefetched (2^26, 2 threads: 2.53 -> 2.68 Gelem/s, 0.81 -> 0.86x of Numba's, which needs no
   prefetch; the same for softmax changed nothing, and a prefetch of out's next row cost 18%).
   Not where FA_SOFTWARE_PREFETCH is 0 (AMD): on the Zen 4 VM, two builds in one process, 2^26,
   2 threads, medians of 9: 16.5 -> 23.3 and 15.5 -> 16.8 GB/s without it; 2^20 19.4 -> 20.2. */
FA_WIDE static void FN(log_softmax_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(softmax_args) *a = args;
    int64_t n = a->n;
    real buffer[FA_BLOCK];
    int use_buffer = a->out == a->x;  /* the API passes out = x or no overlap at all */
    for (int64_t r = lo; r < hi; r++) {
        const real *x = a->x + r * n;
        real *out = a->out + r * n;
        if (FA_SOFTWARE_PREFETCH && r + 1 < hi) FN(prefetch_row)(x + n, n);
        real best = FN(row_maxnum)(x, n);
#if IS_SINGLE
        double total = 0.0;
        for (int64_t j0 = 0; j0 < n; j0 += FA_BLOCK) {
            int64_t j1 = j0 + FA_BLOCK < n ? j0 + FA_BLOCK : n;
            real *e = use_buffer ? buffer : out + j0;
            FN(row_exp)(x + j0, best, e, j1 - j0);
            total += FN(row_sum)(e, j1 - j0);
        }
        double others = total >= 1.0 + 0x1p-10 ? total - 1.0 : FN(row_others)(x, best, n, buffer);
        real log_sum = (real)log1p_f64(others);
#pragma omp simd
        for (int64_t j = 0; j < n; j++) out[j] = (x[j] - best) - log_sum;
#else
        double log_sum = log1p_f64(FN(row_others)(x, best, n, buffer));
#pragma omp simd
        for (int64_t j = 0; j < n; j++) out[j] = (x[j] - best) - log_sum;
#endif
    }
}


/* registry.softmax_backward_element / _split / log_softmax_backward_element */
static INLINE real FN(softmax_backward_element)(real dy, real y, double dot) {
    return (real)((double)y * ((double)dy - dot));
}

static INLINE real FN(softmax_backward_element_split)(real dy, real y, real hi, real lo) {
    return y * ((dy - hi) - lo);
}

static INLINE real FN(log_softmax_backward_element)(real dy, real y, double total) {
    return FMA(-FN(exp)(y), (real)total, dy);
}

static INLINE real FN(log_softmax_backward_element_nonpositive)(real dy, real y, double total) {
    return FMA(-FN(exp_nonpositive)(y), (real)total, dy);
}

/* loops.row_nonpositive: no entry above 0 (NaN counts as not) */
static INLINE int FN(row_nonpositive)(const real *a, int64_t n) {
    if (n > FA_NONPOSITIVE_ROW_MAX)  /* longer rows skip the check (loops.row_nonpositive) */
        return 0;
    int above = 0;  /* (an or, not a count: a count in an int wraps past 2^31 entries) */
#pragma omp simd reduction(|:above)
    for (int64_t j = 0; j < n; j++) above |= a[j] > L(0.0);
    return !above;
}

/* softmax backward's row sums: sum(dy y) in float64 and sum(|dy|) in real (loops.row_dot).
   float32 on AVX-512 by intrinsics, eight floats at a time converted as they are loaded: GCC's
   omp simd loop loaded sixteen and converted the upper eight after an extract (one thread, rows
   of 1024 in L2, softmax backward 0.227 -> 0.167 ns per element). */
static INLINE double FN(row_dot)(const real *dy, const real *y, int64_t n, real *size) {
    double total = 0.0;
    real s = 0;
#if IS_SINGLE && defined(__AVX512F__)
    __m512d first = _mm512_setzero_pd(), second = _mm512_setzero_pd();
    __m512 sizes = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {  /* the float32 products are exact in float64: FMA = mul, add */
        first = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(dy + j)),
                                _mm512_cvtps_pd(_mm256_loadu_ps(y + j)), first);
        second = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(dy + j + 8)),
                                 _mm512_cvtps_pd(_mm256_loadu_ps(y + j + 8)), second);
        sizes = _mm512_add_ps(sizes, _mm512_abs_ps(_mm512_loadu_ps(dy + j)));
    }
    total = _mm512_reduce_add_pd(_mm512_add_pd(first, second));
    s = _mm512_reduce_add_ps(sizes);
    for (; j < n; j++) {  /* the rest of the row (n % 16) */
        total += (double)dy[j] * (double)y[j];
        s += (real)__builtin_fabs(dy[j]);
    }
#else
#pragma omp simd reduction(+:total, s)
    for (int64_t j = 0; j < n; j++) {
        total += (double)dy[j] * (double)y[j];
        s += (real)__builtin_fabs(dy[j]);
    }
#endif
    *size = s;
    return total;
}

/* one row at a time: the row's float64 sum (of dy y for softmax, dy for log_softmax), then dx */
static INLINE void FN(softmax_backward_rows)(const FN(softmax_args) *a, int64_t lo, int64_t hi,
                                             int log) {
    int64_t n = a->n;
    for (int64_t r = lo; r < hi; r++) {
        const real *dy = a->x + r * n, *y = a->y + r * n;
        real *dx = a->out + r * n;
        if (FA_SOFTWARE_PREFETCH && log && r + 1 < hi) {  /* (softmax's: loops.py) */
            FN(prefetch_row)(dy + n, n);
            FN(prefetch_row)(y + n, n);
        }
        if (log) {
            double total = FN(row_sum)(dy, n);
            if (FN(row_nonpositive)(y, n)) {  /* a real log_softmax output's row */
#pragma omp simd
                for (int64_t j = 0; j < n; j++)
                    dx[j] = FN(log_softmax_backward_element_nonpositive)(dy[j], y[j], total);
            } else {
#pragma omp simd
                for (int64_t j = 0; j < n; j++)
                    dx[j] = FN(log_softmax_backward_element)(dy[j], y[j], total);
            }
        } else {  /* loops.softmax_backward_rows: in real, the dot split in two, where in range */
            real size;  /* the sum of |dy| in real (loops.row_dot) */
            double total = FN(row_dot)(dy, y, n, &size);
            if (size < 0x1p126 && __builtin_fabs(total) < 0x1p126) {
                real hi = (real)total, lo = (real)(total - (double)hi);
#pragma omp simd
                for (int64_t j = 0; j < n; j++)
                    dx[j] = FN(softmax_backward_element_split)(dy[j], y[j], hi, lo);
            } else {
#pragma omp simd
                for (int64_t j = 0; j < n; j++) dx[j] = FN(softmax_backward_element)(dy[j], y[j], total);
            }
        }
    }
}

FA_WIDE static void FN(softmax_backward_range)(const void *args, int64_t lo, int64_t hi) {
    FN(softmax_backward_rows)(args, lo, hi, 0);
}

FA_WIDE static void FN(log_softmax_backward_range)(const void *args, int64_t lo, int64_t hi) {
    FN(softmax_backward_rows)(args, lo, hi, 1);
}

/* maxout: x viewed as (outer, channels, pieces, inner), the result as (outer, channels, inner) */
typedef struct {
    const real *x, *dy;
    real *out;
    int64_t channels, pieces, inner;
} FN(maxout_args);

/* registry.maxout_takes_over: a larger value, or the first NaN (a NaN best stays) */
static INLINE int FN(maxout_takes_over)(real v, real best) {
    return ((v > best) | (v != v)) & (best == best);
}

/* Groups along the last axis (inner 1): one group after another, P a constant where inlined
   (the general loops below vectorize over inner, and spent their time on loop set-up for each
   group of 1-long vectors: 2.5 GB/s at 2^26). GCC does not vectorize these loops either (the
   groups of 3 and 4 interleave: "complicated access pattern"); scalar and without branches
   (a branch on which piece wins mispredicts on data like the benchmark's). */
static INLINE void FN(maxout_forward_groups)(const real *x, real *out, int64_t groups, int64_t P) {
    for (int64_t g = 0; g < groups; g++) {
        const real *p = x + g * P;
        real best = p[0];
        for (int64_t j = 1; j < P; j++) best = FN(pick_bits)(FN(maxout_takes_over)(p[j], best), p[j], best);
        out[g] = best;
    }
}

static INLINE void FN(maxout_backward_groups)(const real *x, const real *dy, real *dx,
                                              int64_t groups, int64_t P) {
    for (int64_t g = 0; g < groups; g++) {
        const real *p = x + g * P;
        real best = p[0];
        int64_t where = 0;
        for (int64_t j = 1; j < P; j++) {
            int take = FN(maxout_takes_over)(p[j], best);
            best = FN(pick_bits)(take, p[j], best);
            where = take ? j : where;  /* an integer select: cmov */
        }
        for (int64_t j = 0; j < P; j++) dx[g * P + j] = FN(pick_bits)(j == where, dy[g], L(0.0));
    }
}

static void FN(maxout_forward_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(maxout_args) *a = args;
    int64_t C = a->channels, P = a->pieces, I = a->inner;
    if (I == 1) {
        const real *x = a->x + lo * C * P;
        real *out = a->out + lo * C;
        int64_t groups = (hi - lo) * C;
        switch (P) {
        case 2: FN(maxout_forward_groups)(x, out, groups, 2); break;
        case 3: FN(maxout_forward_groups)(x, out, groups, 3); break;
        case 4: FN(maxout_forward_groups)(x, out, groups, 4); break;
        default: FN(maxout_forward_groups)(x, out, groups, P);
        }
        return;
    }
    /* inner > 1: a piece at a time along inner (loops over i that vectorize; with the loop over
       the pieces inside, GCC saw "control flow in loop") */
    for (int64_t o = lo; o < hi; o++) {
        for (int64_t c = 0; c < C; c++) {
            const real *x = a->x + (o * C + c) * P * I;
            real *out = a->out + (o * C + c) * I;
            for (int64_t i = 0; i < I; i++) out[i] = x[i];
            for (int64_t j = 1; j < P; j++) {
                const real *piece = x + j * I;
#pragma omp simd
                for (int64_t i = 0; i < I; i++)
                    out[i] = FN(pick_bits)(FN(maxout_takes_over)(piece[i], out[i]), piece[i], out[i]);
            }
        }
    }
}

/* dy goes to the first arg-max of each group (the first NaN if any), 0 elsewhere. */
static void FN(maxout_backward_range)(const void *args, int64_t lo, int64_t hi) {
    const FN(maxout_args) *a = args;
    int64_t C = a->channels, P = a->pieces, I = a->inner;
    if (I == 1) {
        const real *x = a->x + lo * C * P, *dy = a->dy + lo * C;
        real *dx = a->out + lo * C * P;
        int64_t groups = (hi - lo) * C;
        switch (P) {
        case 2: FN(maxout_backward_groups)(x, dy, dx, groups, 2); break;
        case 3: FN(maxout_backward_groups)(x, dy, dx, groups, 3); break;
        case 4: FN(maxout_backward_groups)(x, dy, dx, groups, 4); break;
        default: FN(maxout_backward_groups)(x, dy, dx, groups, P);
        }
        return;
    }
    enum { B = 256 };  /* inner > 1: blocks of inner, the arg-maxes in a scratch block */
    real best[B];
    ireal where[B];  /* the width of real: the selects vectorize */
    for (int64_t o = lo; o < hi; o++) {
        for (int64_t c = 0; c < C; c++) {
            const real *x = a->x + (o * C + c) * P * I;
            const real *dy = a->dy + (o * C + c) * I;
            real *dx = a->out + (o * C + c) * P * I;
            for (int64_t i0 = 0; i0 < I; i0 += B) {
                int64_t m = I - i0 < B ? I - i0 : B;
                for (int64_t i = 0; i < m; i++) {
                    best[i] = x[i0 + i];
                    where[i] = 0;
                }
                for (int64_t j = 1; j < P; j++) {
                    const real *piece = x + j * I + i0;
#pragma omp simd
                    for (int64_t i = 0; i < m; i++) {
                        int take = FN(maxout_takes_over)(piece[i], best[i]);
                        best[i] = FN(pick_bits)(take, piece[i], best[i]);
                        where[i] = take ? (ireal)j : where[i];
                    }
                }
                for (int64_t j = 0; j < P; j++) {
#pragma omp simd
                    for (int64_t i = 0; i < m; i++)
                        dx[j * I + i0 + i] = FN(pick_bits)(where[i] == (ireal)j, dy[i0 + i], L(0.0));
                }
            }
        }
    }
}
