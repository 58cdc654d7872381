'use strict';
// Handlers whose events or results stretch JSON.

exports.echo = async (event) => event;

exports.nan = async () => ({ ratio: NaN, limit: Infinity });
