// The umbrella header: everything fiberio offers.
#pragma once
#include "fiberio/errors.hpp"
#include "fiberio/event.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/hub.hpp"
#include "fiberio/io.hpp"
#include "fiberio/stack.hpp"
#include "fiberio/threadpool.hpp"
#include "fiberio/time.hpp"
