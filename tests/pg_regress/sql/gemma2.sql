-- Decoder embedders on the tiny random-weight models committed in engine/tests/models
-- (tiny-gemma2, tiny-mistral, tiny-qwen3; scripts/goldens/make_decoder_goldens.py): Gemma2 as
-- bge-multilingual-gemma2 is published (sharded weights, last-token pooling, normalised), the
-- default retrieval instruction for queries, another task through
-- bge_embed_query(query, model, instruction), and the numbers against transformers (the
-- vectors below are from engine/tests/goldens/tiny-gemma2.json). They live in a model directory
-- of their own (scripts/models/make_test_models.py), the "decoders" subdirectory of the usual one.
SELECT set_config('bge.model_dir', current_setting('bge.model_dir') || '/decoders', false) IS NOT NULL AS decoders_dir;

SELECT name, architecture, dimensions, max_tokens, pooling, normalize, error
FROM bge_models() WHERE name IN ('tiny-gemma2', 'tiny-mistral', 'tiny-qwen3') ORDER BY name;

-- Last-token pooling, normalised, hidden_size wide.
SELECT m AS model, array_length(e, 1) AS dims, round(sqrt((SELECT sum(x::float8 * x) FROM unnest(e) AS x))::numeric, 5) AS norm
FROM unnest(ARRAY['tiny-gemma2', 'tiny-mistral', 'tiny-qwen3']) AS m, bge_embed('Paris is the capital of France.', m) AS e
ORDER BY m;

-- Tokens: <bos> (2) first and no <eos>, as the published Gemma tokenizer (add_bos_token true,
-- add_eos_token false); the same ids as transformers.
SELECT bge_tokenize('Paris is the capital of France.', 'tiny-gemma2') AS ids,
       bge_tokenize('Paris is the capital of France.', 'tiny-gemma2') = '{2,54,296,585,523,281,548,593,297,550,537,595,21}'::int[] AS same_as_transformers;
SELECT bge_tokenize('', 'tiny-gemma2') AS empty, bge_tokenize('<instruct> <query>', 'tiny-gemma2') AS added_tokens;
-- Truncation at max_seq_length (96), <bos> included, whatever bge.truncate says for a named model.
SELECT bge_token_count(repeat('word ', 300), 'tiny-gemma2') AS truncated_count;

-- Against transformers (Gemma2Model, eager attention, fp32): cosine >= 0.99999.
SELECT i, 1 - (bge_embed(t, 'tiny-gemma2') <=> golden) >= 0.99999 AS matches_transformers
FROM (VALUES
    (3, E'Paris is the capital of France.',
     '{-0.0986873209476471,-0.005175901111215353,0.008493037894368172,0.19436265528202057,-0.04634001478552818,-0.011416418477892876,0.030509643256664276,-0.057240065187215805,0.07806645333766937,-0.127521812915802,0.08168644458055496,0.03352481871843338,0.005848543252795935,0.0015375770162791014,-0.0228482186794281,-0.008673308417201042,0.14764294028282166,0.19239796698093414,-0.45048221945762634,-0.16440057754516602,-0.12767393887043,0.11048049479722977,-0.02680007927119732,-0.0025946309324353933,0.18594376742839813,0.08188704401254654,-0.14011286199092865,-0.04629817232489586,-0.2726360559463501,0.07238069921731949,0.35841065645217896,0.13515610992908478,-0.08116736263036728,0.15913140773773193,-0.007745989132672548,-0.10486844182014465,-0.11100152134895325,0.24058660864830017,-0.00319177214987576,-0.23012635111808777,0.08873357623815536,0.07184381037950516,-0.23360319435596466,-0.13198648393154144,0.19304905831813812,-0.09806535392999649,-0.03812110424041748,0.09083117544651031}'::real[]),
    (7, E'Crème brûlée, façade, naïve café, São Paulo, Ångström, Straße.',
     '{0.010668482631444931,0.1255900114774704,-0.06965241581201553,0.12460672855377197,-0.05766719952225685,0.001992991892620921,0.15317676961421967,-0.01195542886853218,0.029416697099804878,0.15203766524791718,0.03335048630833626,-0.16424070298671722,-0.04418365657329559,0.3827349543571472,-0.01673462986946106,-0.08308172225952148,0.15555092692375183,0.3372594118118286,0.04236680641770363,-0.08952082693576813,0.3444264531135559,-0.2415190190076828,0.12691985070705414,-0.07021267712116241,-0.12226875871419907,-0.052102331072092056,0.2702777087688446,-0.1604689210653305,0.21999827027320862,0.03234199807047844,-0.03116515651345253,0.04268477112054825,-0.18067781627178192,0.15073522925376892,-0.004339706618338823,0.0991256907582283,-0.18867318332195282,0.05361331254243851,-0.05454712733626366,-0.2659085988998413,0.12677504122257233,0.10741608589887619,-0.014169099740684032,0.06310393661260605,-0.020147571340203285,-0.035653479397296906,0.05534915626049042,0.02757512778043747}'::real[]),
    (10, E'北京是中华人民共和国的首都。',
     '{0.08314917981624603,-0.12085925787687302,-0.06925494223833084,0.08582934737205505,0.03705956041812897,-0.015673695132136345,-0.033724345266819,0.19117200374603271,-0.18951475620269775,-0.39597928524017334,0.16012315452098846,0.08130647242069244,-0.06179046258330345,0.1682904064655304,0.021499013528227806,-0.030547717586159706,0.11132549494504929,0.01734861172735691,-0.22517850995063782,-0.1456572413444519,-0.24108657240867615,-0.12294027209281921,0.12384869158267975,0.03409912809729576,-0.1170332059264183,-0.053182583302259445,-0.15366360545158386,-0.19763430953025818,0.02460327185690403,0.05338413640856743,0.08203064650297165,0.0352746844291687,0.13996195793151855,0.1765187680721283,-0.001953287748619914,0.22912666201591492,0.06237437576055527,0.12611986696720123,-0.20478743314743042,-0.09104487299919128,-0.12388022989034653,0.14962853491306305,0.4241454601287842,-0.06934583932161331,0.06631480902433395,-0.042495179921388626,-0.007171218749135733,0.03949352353811264}'::real[]),
    (31, E'The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. The quick brown fox jumps over the lazy dog while the committee debates quarterly infrastructure budgets, vector databases, and retrieval-augmented generation. ',
     '{0.10508951544761658,-0.026956496760249138,0.009391101077198982,-0.27728620171546936,0.032227251678705215,0.005121876019984484,-0.04937468841671944,0.29599034786224365,-0.0638609379529953,0.18210169672966003,0.11783444136381149,0.07792302221059799,0.009959153831005096,-0.044216617941856384,-0.03800821304321289,0.05967570096254349,-0.14605212211608887,-0.22322198748588562,-0.11336851865053177,-0.14121153950691223,-0.07829451560974121,0.026641080155968666,0.21822065114974976,0.03692632168531418,-0.3130471706390381,0.060571376234292984,-0.11762553453445435,-0.18034805357456207,-0.03105701133608818,0.10730558633804321,0.26649239659309387,-0.28623437881469727,-0.09396224468946457,0.19210438430309296,-0.0041570039466023445,0.09131026268005371,-0.2001335173845291,-0.15571410953998566,-0.08748295158147812,0.21290884912014008,0.12009143829345703,-0.2670808732509613,0.06632164120674133,-0.06378839910030365,0.03198138624429703,-0.02824607491493225,-0.11380381882190704,-0.04782652482390404}'::real[]),
    (35, E'word word word word word word word',
     '{0.07214673608541489,-0.05642236769199371,-0.0783107802271843,-0.19330216944217682,0.04597537964582443,0.003776650410145521,-0.16917961835861206,0.01727925054728985,-0.10404844582080841,-0.3594440221786499,-0.07918601483106613,0.20608338713645935,-0.02805921621620655,0.3082771897315979,0.05077579617500305,-0.023749155923724174,-0.0300204548984766,-0.0932430699467659,0.23684263229370117,0.049267493188381195,-0.10225734859704971,-0.28499194979667664,0.09936177730560303,0.00370167288929224,-0.21899829804897308,-0.12398810684680939,-0.09873004257678986,0.07537230849266052,-0.01940968818962574,0.057526905089616776,0.021785259246826172,-0.4246661365032196,0.18398387730121613,0.2050909548997879,-0.009254887700080872,0.07365576922893524,-0.09692887216806412,0.024752337485551834,-0.023103902116417885,-0.027219217270612717,0.07576881349086761,-0.11341337859630585,-0.23553934693336487,0.006693896371871233,-0.0879846066236496,-0.04180974140763283,-0.07281196862459183,-0.12151212990283966}'::real[])
) AS g(i, t, golden) ORDER BY i;

-- Queries: the model's default retrieval instruction in Gemma2's query template, or another
-- task in the same template; passages get no prompt.
SELECT bge_embed_query('capital of France', 'tiny-gemma2')
           = bge_embed(E'<instruct>Given a web search query, retrieve relevant passages that answer the query.\n<query>capital of France', 'tiny-gemma2') AS default_instruction,
       bge_embed_query('capital of France', 'tiny-gemma2', 'Given a question, retrieve passages that answer it')
           = bge_embed(E'<instruct>Given a question, retrieve passages that answer it\n<query>capital of France', 'tiny-gemma2') AS other_task,
       bge_embed_query('capital of France', 'tiny-gemma2') <> bge_embed('capital of France', 'tiny-gemma2') AS differs_from_passage,
       bge_token_count_query('capital of France', 'tiny-gemma2')
           = bge_token_count(E'<instruct>Given a web search query, retrieve relevant passages that answer the query.\n<query>capital of France', 'tiny-gemma2') AS count_includes_instruction;
SELECT coalesce(task, 'default') AS task,
       1 - (CASE WHEN task IS NULL THEN bge_embed_query('what is the capital of France?', 'tiny-gemma2')
                 ELSE bge_embed_query('what is the capital of France?', 'tiny-gemma2', task) END <=> golden) >= 0.99999 AS matches_transformers
FROM (VALUES
    (NULL::text,
     '{-0.15390294790267944,-0.016922010108828545,0.03651602566242218,-0.03536849468946457,0.00034752627834677696,-0.03338820859789848,-0.05616692453622818,0.0371861606836319,0.02986401878297329,-0.11952351033687592,0.14701564610004425,-0.09634040296077728,0.08705651015043259,0.01087123155593872,0.0070442985743284225,-0.023690877482295036,-0.066104456782341,0.06528182327747345,0.1341998279094696,-0.10735466331243515,0.11617463827133179,-0.002320176223292947,-0.03900836035609245,-0.018603749573230743,-0.04423999786376953,0.17250005900859833,0.008496610447764397,0.011643880978226662,-0.11789151281118393,0.025595735758543015,0.26226508617401123,-0.27429741621017456,0.21410708129405975,0.1113642156124115,0.012198778800666332,-0.026435624808073044,0.0024796819780021906,0.2098204791545868,0.014090902172029018,0.09247054904699326,0.15128852427005768,-0.5973618626594543,-0.39992859959602356,0.10177247226238251,-0.013300775550305843,-0.00952921062707901,-0.06308317184448242,0.05682245269417763}'::real[]),
    (E'Given a question, retrieve passages that answer it',
     '{-0.11975240707397461,-0.010236264206469059,0.08158887922763824,-0.028364794328808784,0.008594372309744358,-0.02505420334637165,-0.0780487135052681,-0.017611360177397728,0.07665057480335236,-0.08434080332517624,0.15563887357711792,-0.08369512856006622,0.08951159566640854,0.007334340829402208,0.030606335029006004,-0.03679914027452469,-0.09985864162445068,0.04489471763372421,0.09187735617160797,-0.08965565264225006,0.08651436865329742,-0.004062409047037363,-0.016523120924830437,-0.024734914302825928,-0.08366438746452332,0.1835615187883377,0.006355982273817062,0.0006669638096354902,-0.1481962352991104,0.050069183111190796,0.23939497768878937,-0.3650854825973511,0.1876661777496338,0.1258506327867508,0.011871492490172386,-0.03469250723719597,0.010270082391798496,0.2067832499742508,0.017122343182563782,0.06994181126356125,0.17816129326820374,-0.5164340734481812,-0.45744794607162476,0.013967894949018955,0.0036145809572190046,-0.027074294164776802,-0.03761804476380348,0.11510585248470306}'::real[])
) AS q(task, golden);
-- Qwen3's template is its own.
SELECT bge_embed_query('capital of France', 'tiny-qwen3')
           = bge_embed(E'Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:capital of France', 'tiny-qwen3') AS qwen3_template;
SELECT bge_embed_query('x', 'tiny-gemma2', NULL) IS NULL AS strict;

-- A batch gives bitwise the vectors of one-by-one calls (texts of mixed lengths, longer than
-- the 8-token sliding window and than max_seq_length).
WITH texts(a) AS (SELECT ARRAY['a', 'Paris is the capital of France.', repeat('word ', 50), repeat('lorem ipsum ', 200), ''])
SELECT m AS model, bool_and(e = bge_embed(a[i::int], m)) AS batch_equals_single, count(*) AS rows
FROM texts, unnest(ARRAY['tiny-gemma2', 'tiny-mistral', 'tiny-qwen3']) AS m, bge_embed(a, m) WITH ORDINALITY AS r(e, i)
GROUP BY m ORDER BY m;

-- An encoder takes the instruction itself as the prompt.
RESET bge.model_dir;
SELECT bge_embed_query('capital of France', 'all-MiniLM-L6-v2', 'Represent this: ')
           = bge_embed('Represent this: capital of France', 'all-MiniLM-L6-v2') AS encoder_instruction_is_the_prompt;
