'use strict';
module.exports = { api: { v1: async (event) => ({ nested: event.x }) } };
