'use strict';
// A function whose module fails to load: the package it needs is missing.
const missing = require('baton-e2e-package-that-does-not-exist');

exports.handler = async () => missing.answer();
