// Package report writes the benchmark client's results: one CSV row per
// request, JSON summaries, and plots as self-contained SVG files that any
// browser shows without scripts, fonts or style sheets from elsewhere.
//
// Plots draw the data as measured. Empirical CDFs are step functions of
// every sample; where a series has too many samples to draw, points are
// dropped only where they would be closer than a fraction of a pixel to the
// ones kept, and the minimum, maximum and the P50/P90/P99/P99.9 points
// (nearest-rank, as in package stats) are always kept.
package report
