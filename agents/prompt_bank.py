"""Vocabulary of the offline prompt generator, seeded from the scenes of the paper and the Sora
report it compares with (rocket liftoff, coral reef, city skateboarding, a red car in the
1920s, a Minecraft-like world …)."""

SUBJECTS = (
    "a stylish woman in a red coat", "a rocket", "a school of tropical fish", "a skateboarder",
    "a vintage red car", "a pig made of voxels", "a golden retriever puppy", "an old fisherman",
    "a paper boat", "a hot air balloon", "a woolly mammoth", "a robot barista", "a lighthouse",
    "a pirate ship", "a monarch butterfly", "a steam locomotive", "a snow leopard",
    "two astronauts", "a cyclist", "a jellyfish",
)
ACTIONS = (
    "walking slowly", "lifting off", "swimming in circles", "gliding past the camera",
    "driving along a winding road", "wandering through the grass", "running towards the camera",
    "drifting on the water", "rising into the sky", "turning its head", "pouring latte art",
    "sailing through waves", "landing on a flower", "crossing a stone bridge", "leaping between rocks",
    "floating weightlessly", "racing downhill", "pulsing gently",
)
SETTINGS = (
    "on a neon-lit Tokyo street at night", "over a launch pad at dawn", "through a vibrant coral reef",
    "in a sunlit city plaza", "in a 1920s town", "in a blocky digital world", "in a snowy forest",
    "on a misty harbour", "above rolling farmland", "across a frozen tundra", "in a cosy café",
    "on a stormy sea", "in a wildflower meadow", "through a canyon at sunset", "on the surface of the moon",
    "along a rainy boulevard", "in a deep blue ocean",
)
STYLES = (
    "cinematic 35mm film", "documentary handheld camera", "aerial drone shot", "macro close-up",
    "golden hour lighting", "soft overcast light", "high-contrast noir", "pastel animation style",
    "in digital world style", "slow-motion, shallow depth of field",
)
