/* A fixture for check-layers: a -> b -> c -> a. */
#include "b.h"
