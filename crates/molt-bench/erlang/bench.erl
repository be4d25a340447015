%% The Erlang/OTP side of molt's benchmark harness: each function does the
%% same work as the molt workload of the same name (crates/molt-bench/src/
%% workloads.rs) and prints one JSON object: {"seconds": S} plus, for memory,
%% "bytes_per_process" (resident memory, as molt measures it).
-module(bench).
-export([run/1, round_trips/1, one_way/1, spawn/1, memory/1, selective_receive/1,
         spawn_link_kill/1, monitor_demonitor/1, big_message/1, big_message_1m/1, big_bytes/1, timers_pending/1, parallel_pairs/1, ring/1, big_bang/1, fairness/1, burst_memory/1, load/1, purge_100k/1, pingpong_upgrades/1,
         remote_round_trips/1, remote_one_way/1, remote_bulk/1, remote_latency_under_bulk/1, detect_sigkill/1]).
-compile({no_auto_import, [spawn/1]}).

run([Workload, N]) ->
    Result = ?MODULE:(list_to_atom(Workload))(list_to_integer(N)),
    io:format("~s~n", [json(Result)]),
    halt(0).

json(Pairs) ->
    Fields = [io_lib:format("\"~s\": ~p", [K, V]) || {K, V} <- Pairs],
    ["{", lists:join(", ", Fields), "}"].

seconds(Start) ->
    erlang:monotonic_time(nanosecond) - Start + 0.0.

now_ns() -> erlang:monotonic_time(nanosecond).

round_trips(N) ->
    Echo = erlang:spawn(fun Loop() -> receive {From, X} -> From ! X, Loop() end end),
    Start = now_ns(),
    ping(Echo, 0, N),
    S = seconds(Start) / 1.0e9,
    exit(Echo, kill),
    [{seconds, S}].

ping(_, N, N) -> ok;
ping(Echo, I, N) ->
    Echo ! {self(), I},
    receive I -> ping(Echo, I + 1, N) end.

one_way(N) ->
    Parent = self(),
    Start = now_ns(),
    Sink = erlang:spawn(fun() -> Parent ! {done, count(N, 0)} end),
    send_all(Sink, 0, N),
    receive {done, _} -> ok end,
    [{seconds, seconds(Start) / 1.0e9}].

count(0, Sum) -> Sum;
count(N, Sum) -> receive X when is_integer(X) -> count(N - 1, Sum + X) end.

send_all(_, N, N) -> ok;
send_all(Pid, I, N) -> Pid ! I, send_all(Pid, I + 1, N).

spawn(N) ->
    Start = now_ns(),
    Pids = [erlang:spawn(fun() -> receive _ -> ok end end) || _ <- lists:seq(1, N)],
    S = seconds(Start) / 1.0e9,
    [P ! go || P <- Pids],
    [{seconds, S}].

resident_bytes() ->
    {ok, Statm} = file:read_file("/proc/self/statm"),
    [_, Resident | _] = string:split(binary_to_list(Statm), " ", all),
    list_to_integer(Resident) * 4096.

memory(N) ->
    Parent = self(),
    garbage_collect(),
    Before = resident_bytes(),
    Start = now_ns(),
    Pids = [erlang:spawn(fun() -> Parent ! started, receive _ -> ok end end) || _ <- lists:seq(1, N)],
    [receive started -> ok end || _ <- Pids],
    S = seconds(Start) / 1.0e9,
    %% The parent's list of pids is not the processes' memory: 2 words a cell.
    Bytes = (resident_bytes() - Before - N * 16) / N,
    [P ! go || P <- Pids],
    [{seconds, S}, {bytes_per_process, Bytes}].

selective_receive(N) ->
    Rounds = 10,
    Receiver = erlang:spawn(fun() -> reply(Rounds) end),
    send_all(Receiver, 0, N),
    Receiver ! {self(), -1},
    receive -1 -> ok end,
    Start = now_ns(),
    [begin Receiver ! {self(), K}, receive K -> ok end end || K <- lists:seq(1, Rounds - 1)],
    [{seconds, seconds(Start) / 1.0e9 / (Rounds - 1)}].

reply(0) -> ok;
reply(Rounds) ->
    receive {From, K} when is_pid(From) -> From ! K end,
    reply(Rounds - 1).

spawn_link_kill(N) ->
    process_flag(trap_exit, true),
    Start = now_ns(),
    Children = [spawn_link(fun() -> receive _ -> ok end end) || _ <- lists:seq(1, N)],
    [exit(C, kill) || C <- Children],
    [receive {'EXIT', _, _} -> ok end || _ <- Children],
    [{seconds, seconds(Start) / 1.0e9}].

monitor_demonitor(N) ->
    Target = erlang:spawn(fun() -> receive _ -> ok end end),
    Start = now_ns(),
    Refs = [erlang:monitor(process, Target) || _ <- lists:seq(1, N)],
    [true = erlang:demonitor(R) || R <- Refs],
    S = seconds(Start) / 1.0e9,
    Target ! stop,
    [{seconds, S}].

%% A binary is Erlang's one kind of byte payload: both molt workloads
%% compare against it.
big_message_1m(N) -> big_message(N).
big_bytes(N) -> big_message(N).

big_message(N) ->
    Bin = binary:copy(<<7>>, N),
    Parent = self(),
    Sink = erlang:spawn(fun() -> receive {From, B} -> From ! byte_size(B) end end),
    Start = now_ns(),
    Sink ! {Parent, Bin},
    receive N -> ok end,
    [{seconds, seconds(Start) / 1.0e9}].

timers_pending(N) ->
    garbage_collect(),
    Before = resident_bytes(),
    Start = now_ns(),
    Timers = [erlang:send_after(3600000, self(), x) || _ <- lists:seq(1, N)],
    S = seconds(Start) / 1.0e9,
    %% The list of timer references is not the timers' memory: a cell and a
    %% reference (about 10 words) each.
    Bytes = (resident_bytes() - Before - N * 80) / N,
    [erlang:cancel_timer(T) || T <- Timers],
    [{seconds, S}, {bytes_per_process, Bytes}].

burst_memory(N) ->
    self() ! stays,
    garbage_collect(),
    Before = resident_bytes(),
    Start = now_ns(),
    send_all(self(), 0, N),
    [receive X when is_integer(X) -> ok end || _ <- lists:seq(1, N)],
    S = seconds(Start) / 1.0e9,
    garbage_collect(),
    [{seconds, S}, {bytes_per_process, max(0, resident_bytes() - Before)}].

%% --- schedulers ------------------------------------------------------------

%% Two ping-pong pairs per scheduler, all started by this process.
parallel_pairs(N) ->
    Pairs = 2 * erlang:system_info(schedulers_online),
    Parent = self(),
    Start = now_ns(),
    [begin
         Pong = erlang:spawn(fun() -> pong(N) end),
         erlang:spawn(fun() -> ping(Pong, N), Parent ! pair_done end)
     end || _ <- lists:seq(1, Pairs)],
    [receive pair_done -> ok end || _ <- lists:seq(1, Pairs)],
    [{seconds, seconds(Start) / 1.0e9}].

ping(_, 0) -> ok;
ping(Pong, K) -> Pong ! {self(), K}, receive K -> ping(Pong, K - 1) end.

pong(0) -> ok;
pong(K) -> receive {From, X} -> From ! X, pong(K - 1) end.

%% A token passed 100 times round a ring of N processes.
ring(N) ->
    Size = N,
    Parent = self(),
    Ring = [erlang:spawn(fun() -> receive {next, Next} -> relay(Next, Parent) end end) || _ <- lists:seq(1, Size)],
    [P ! {next, Q} || {P, Q} <- lists:zip(Ring, tl(Ring) ++ [hd(Ring)])],
    Start = now_ns(),
    hd(Ring) ! {token, 100 * Size},
    receive token_done -> ok end,
    S = seconds(Start) / 1.0e9,
    [exit(P, kill) || P <- Ring],
    [{seconds, S}].

relay(Next, Parent) ->
    receive
        {token, 0} -> Parent ! token_done, relay(Next, Parent);
        {token, K} -> Next ! {token, K - 1}, relay(Next, Parent)
    end.

%% N processes, each sending one message to every other.
big_bang(N) ->
    Parent = self(),
    All = [erlang:spawn(fun() -> receive {go, Pids} -> bang(Pids, Parent) end end) || _ <- lists:seq(1, N)],
    Start = now_ns(),
    [P ! {go, All} || P <- All],
    [receive bang_done -> ok end || _ <- All],
    [{seconds, seconds(Start) / 1.0e9}].

bang(Pids, Parent) ->
    Me = self(),
    [P ! hi || P <- Pids, P =/= Me],
    [receive hi -> ok end || _ <- tl(Pids)],
    Parent ! bang_done.

%% Two busy processes per scheduler that never wait, and N pings to an
%% echo: the 99th percentile of the pings' round-trip times.
fairness(N) ->
    Busy = [erlang:spawn(fun() -> busy() end) || _ <- lists:seq(1, 2 * erlang:system_info(schedulers_online))],
    Echo = erlang:spawn(fun() -> echo() end),
    Latencies = lists:sort([ping_once(Echo, I) || I <- lists:seq(1, N)]),
    [exit(P, kill) || P <- [Echo | Busy]],
    [{seconds, lists:nth(max(1, N * 99 div 100), Latencies) / 1.0e9}].

busy() -> self() ! go, receive go -> busy() end.

echo() -> receive {From, X} -> From ! X, echo() end.

ping_once(Echo, I) ->
    T = now_ns(),
    Echo ! {self(), I},
    receive I -> now_ns() - T end.

%% --- code loading ----------------------------------------------------------

%% A module binary compiled from source text, as code:load_binary/3 takes it.
module_binary(Source) ->
    {ok, Tokens, _} = erl_scan:string(Source),
    Forms = [begin {ok, Form} = erl_parse:parse_form(F), Form end || F <- split_forms(Tokens, [], [])],
    {ok, _Module, Binary} = compile:forms(Forms, [binary]),
    Binary.

split_forms([], [], Forms) -> lists:reverse(Forms);
split_forms([{dot, _} = Dot | Rest], Current, Forms) ->
    split_forms(Rest, [], [lists:reverse([Dot | Current]) | Forms]);
split_forms([Token | Rest], Current, Forms) -> split_forms(Rest, [Token | Current], Forms).

%% The small module of the load workload, in two versions.
small_module(Vsn) ->
    module_binary("-module(bench_small).\n-export([loop/0, version/0]).\n"
                  "version() -> " ++ integer_to_list(Vsn) ++ ".\n"
                  "loop() -> receive stop -> ok; _ -> loop() end.\n").

%% Time per load of a new version of a small module (code:load_binary/3),
%% the old version purged first, untimed.
load(N) ->
    Binaries = {small_module(1), small_module(2)},
    Times = [begin
                 code:purge(bench_small),
                 Start = now_ns(),
                 {module, bench_small} = code:load_binary(bench_small, "bench_small.erl", element(1 + I rem 2, Binaries)),
                 seconds(Start)
             end || I <- lists:seq(1, N)],
    [{seconds, lists:sum(Times) / N / 1.0e9}].

%% code:purge/1 of an old version run by one process, with N other
%% processes alive.
purge_100k(N) ->
    Others = [erlang:spawn(fun() -> receive _ -> ok end end) || _ <- lists:seq(1, N)],
    code:purge(bench_small),
    {module, _} = code:load_binary(bench_small, "bench_small.erl", small_module(1)),
    Lingering = erlang:spawn(fun bench_small:loop/0),
    {module, _} = code:load_binary(bench_small, "bench_small.erl", small_module(2)),
    Start = now_ns(),
    true = code:purge(bench_small),
    S = seconds(Start) / 1.0e9,
    false = is_process_alive(Lingering),
    [P ! go || P <- Others],
    [{seconds, S}].

pp_module(Vsn) ->
    module_binary("-module(bench_pp).\n-export([server/0]).\n"
                  "server() -> receive {From, N} -> From ! {N, " ++ integer_to_list(Vsn) ++ "}, server(); "
                  "upgrade -> bench_pp:server() end.\n").

%% The seed's ping-pong with N pipelined pings (a window of 1024 in
%% flight) and two upgrades, 1 -> 2 -> 1, as `molt demo --upgrades 2` does.
pingpong_upgrades(N) ->
    Versions = {pp_module(1), pp_module(2)},
    code:purge(bench_pp),
    {module, _} = code:load_binary(bench_pp, "bench_pp.erl", element(1, Versions)),
    Server = erlang:spawn(fun bench_pp:server/0),
    Points = [N div 3, 2 * N div 3],
    Start = now_ns(),
    First = min(1024, N),
    [Server ! {self(), I} || I <- lists:seq(0, First - 1)],
    ok = pp_collect(Server, N, 0, First, Points, Versions, 2),
    S = seconds(Start) / 1.0e9,
    exit(Server, kill),
    [{seconds, S}].

pp_collect(_, N, N, _, _, _, _) -> ok;
pp_collect(Server, N, Received, Sent, Points, Versions, Next) ->
    receive
        {Received, _Vsn} ->
            Sent1 = case Sent < N of true -> Server ! {self(), Sent}, Sent + 1; false -> Sent end,
            case lists:member(Received + 1, Points) of
                true ->
                    soft_purge_wait(bench_pp),
                    {module, _} = code:load_binary(bench_pp, "bench_pp.erl", element(Next, Versions)),
                    Server ! upgrade,
                    pp_collect(Server, N, Received + 1, Sent1, Points, Versions, 3 - Next);
                false ->
                    pp_collect(Server, N, Received + 1, Sent1, Points, Versions, Next)
            end
    after 60000 -> {error, {lost, Received}}
    end.

soft_purge_wait(Module) ->
    case code:soft_purge(Module) of
        true -> ok;
        false -> erlang:yield(), soft_purge_wait(Module)
    end.

%% Distribution: a peer node started on 127.0.0.1 (this VM runs with -name),
%% loading this module from the same directory.
start_peer() ->
    Dir = filename:dirname(code:which(?MODULE)),
    {ok, Peer, Node} = peer:start_link(#{name => peer:random_name(), host => "127.0.0.1", longnames => true,
                                         args => ["-pa", Dir, "-setcookie", atom_to_list(erlang:get_cookie())]}),
    {Peer, Node}.

remote_echo(Node) ->
    erlang:spawn(Node, fun Loop() -> receive {From, X} -> From ! X, Loop() end end).

remote_round_trips(N) ->
    {Peer, Node} = start_peer(),
    Echo = remote_echo(Node),
    ping(Echo, 0, 100),
    Start = now_ns(),
    ping(Echo, 0, N),
    S = seconds(Start) / 1.0e9,
    peer:stop(Peer),
    [{seconds, S}].

%% A counter on the peer: learns whom to tell, takes N messages, answers.
remote_counter(Node, N) ->
    erlang:spawn(Node, fun() -> receive {driver, D} -> count_any(N), D ! done end end).

count_any(0) -> ok;
count_any(N) -> receive _ -> count_any(N - 1) end.

%% Streams N messages, which Send(Sink) sends, to a counter on a peer node.
stream_to_peer(N, Send) ->
    {Peer, Node} = start_peer(),
    Sink = remote_counter(Node, N),
    Sink ! {driver, self()},
    Start = now_ns(),
    Send(Sink),
    receive done -> ok end,
    S = seconds(Start) / 1.0e9,
    peer:stop(Peer),
    [{seconds, S}].

remote_one_way(N) ->
    stream_to_peer(N, fun(Sink) -> send_all(Sink, 0, N) end).

remote_bulk(N) ->
    Chunk = binary:copy(<<7>>, 1 bsl 20),
    stream_to_peer(N, fun(Sink) -> [Sink ! Chunk || _ <- lists:seq(1, N)] end).

remote_latency_under_bulk(N) ->
    {Peer, Node} = start_peer(),
    Echo = remote_echo(Node),
    Parent = self(),
    Sink = erlang:spawn(Node, fun() -> receive {From, B} -> From ! {done, byte_size(B)} end end),
    ping(Echo, 0, 100),
    Big = binary:copy(<<7>>, N),
    erlang:spawn(fun() -> Sink ! {Parent, Big} end),
    Worst = lists:max(pings_until_done(Echo, 0, [])),
    peer:stop(Peer),
    [{seconds, Worst}].

pings_until_done(Echo, I, Times) ->
    Start = now_ns(),
    Echo ! {self(), I},
    receive I -> ok end,
    T = seconds(Start) / 1.0e9,
    receive {done, _} -> [T | Times] after 0 -> pings_until_done(Echo, I + 1, [T | Times]) end.

detect_sigkill(_) ->
    {Peer, Node} = start_peer(),
    OsPid = erpc:call(Node, os, getpid, []),
    unlink(Peer),
    monitor_node(Node, true),
    Start = now_ns(),
    os:cmd("kill -9 " ++ OsPid),
    receive {nodedown, Node} -> ok end,
    [{seconds, seconds(Start) / 1.0e9}].
