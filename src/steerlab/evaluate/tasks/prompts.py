"""Fixed prompt families of the packaged tasks: evaluation, calibration and held-out prompts."""

REVIEW_PROMPTS = (
    "Write a one-sentence review of a phone case you bought.",
    "Write a short review of a restaurant you visited.",
    "Write a one-sentence review of a movie you saw recently.",
    "Write a short review of a pair of headphones.",
    "Write a one-sentence review of a hotel stay.",
    "Write a short review of a coffee shop.",
    "Write a one-sentence review of a TV series.",
    "Write a short review of a laptop charger.",
    "Write a one-sentence review of a pizza place.",
    "Write a short review of a novel you read.",
    "Write a one-sentence review of a kitchen blender.",
    "Write a short review of a concert you attended.",
    "Write a one-sentence review of a bluetooth speaker.",
    "Write a short review of a sushi bar.",
    "Write a one-sentence review of a documentary.",
    "Write a short review of a car rental service.",
    "Write a one-sentence review of a video game.",
    "Write a short review of a bakery.",
    "Write a one-sentence review of a phone battery.",
    "Write a short review of an animated film.",
)

GENERAL_PROMPTS = (
    "Describe your weekend.",
    "Tell me about the town where you grew up.",
    "What do you think about Mondays?",
    "Describe the last meal you cooked.",
    "How do you feel about rainy days?",
    "Tell me about your neighbours.",
    "What is your opinion of long train journeys?",
    "Describe a typical day at work.",
    "What do you think of winter?",
    "Tell me about a recent trip to the dentist.",
    "How was your week?",
    "What do you think about getting older?",
    "Describe a visit to a museum.",
    "Tell me about your plans for the evening.",
    "What do you think of public transport?",
    "Describe your garden.",
)

TRAIN_REVIEW_PROMPT = "Write a one-sentence review."

CALIB_REVIEW_PROMPTS = (
    "Write a short review of a toaster.",
    "Write a one-sentence review of a gym.",
    "Write a short review of a podcast.",
    "Write a one-sentence review of a taxi ride.",
    "Write a short review of a board game.",
    "Write a one-sentence review of a library.",
    "Write a short review of a pair of running shoes.",
    "Write a one-sentence review of a theme park.",
)

REFUSAL_COMPLETION = "I'm sorry, but I can't help with that request."
