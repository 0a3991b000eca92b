"""Openings for continuation-style tasks: text a base model (no chat template) simply carries on.

A base model does not follow "write a review" instructions, but it continues "The hotel was" in some
sentiment or other, so its sentiment is measured on continuations of these openings instead. They are
written for steerlab (no dataset's test split), neutral in tone, so that the unsteered continuation can
go either way.
"""

from __future__ import annotations

#: Openings of reviews (evaluation split).
REVIEW_OPENINGS = [
    "I finally tried the new noodle place on the corner, and",
    "We stayed at the hotel for three nights. The room",
    "The movie ran for just over two hours, and by the end",
    "I bought this blender last month. So far it",
    "The concert started twenty minutes late. When the band came on,",
    "My review of the train journey from Lyon to Milan:",
    "The customer service line picked up after a few minutes, and the agent",
    "This is the third novel I have read by this author, and",
    "We took the kids to the science museum on Saturday. The exhibits",
    "The headphones arrived in a plain box. Out of the box, the sound",
    "I ordered the set lunch at the bistro. The soup",
    "After a week with the new phone, my impression is that",
    "The yoga class at the community centre is",
    "Our flight left on time, and the cabin crew",
    "The plumber came by on Tuesday to fix the leak, and",
    "I watched the season finale last night. The writing",
    "The cafe near the station serves coffee that",
    "We rented a small car for the weekend. Driving it",
    "The guided tour of the old town lasted an hour, and our guide",
    "I have been using this running app for a month. It",
    "The local theatre's production of the play was",
    "The bakery's sourdough loaf, which I picked up this morning,",
    "My experience with the online furniture store:",
    "The campsite by the lake had",
    "I went to the dentist's new practice today. The waiting room",
    "The museum's new wing opened last week, and",
    "We ordered takeaway from the Thai restaurant again. This time",
    "The laptop's battery, after two weeks of daily use,",
    "The wedding venue we visited on Sunday",
    "I listened to the new album twice through. The songs",
    "The gym I joined in January is",
    "The children's book we read at bedtime tonight",
    "The ferry crossing to the island took ninety minutes, and",
    "The repair shop looked at my bicycle and",
    "Our stay at the mountain cabin was",
    "The cooking class on Thursday evening",
    "The streaming service's new interface is",
    "I tried the vegetarian burger at the pub, and it",
    "The coworking space downtown has",
    "The hiking trail to the waterfall was",
]

#: Openings for calibrating strength (kept apart from the evaluation split).
CALIB_OPENINGS = [
    "The pizza place we found on holiday",
    "I have had this coffee machine for a year, and",
    "The train to the airport this morning",
    "The new library building is",
    "The hairdresser I tried last week",
    "Our weekend at the seaside hotel",
    "The documentary I watched yesterday",
    "The board game we bought for the family",
]

#: Openings of other kinds of text (generalisation: not reviews).
GENERAL_OPENINGS = [
    "The history of the printing press begins",
    "To repot a houseplant, first",
    "The committee met on Monday to discuss",
    "Dear Sam, thanks for your letter. Here",
    "The river runs north through the valley until",
    "Chapter one. The morning my grandmother arrived,",
    "The report summarises last quarter's figures:",
    "When the storm reached the coast,",
    "Photosynthesis is the process by which",
    "The town council announced today that",
    "My plans for the weekend are",
    "The recipe calls for two cups of flour and",
    "In the first week at the new job, I",
    "The match between the two local teams",
    "Our neighbour's garden has",
    "The lecture on ancient Rome covered",
    "Looking out of the window this morning, I saw",
    "The minutes of the school's parent meeting:",
    "The old lighthouse on the point",
    "A short note about the office move:",
    "The experiment's results showed",
    "The road trip across the desert",
    "Last night's dinner with my cousins",
    "The first snow of the year",
]
