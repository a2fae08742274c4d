using System.Globalization;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace GpuExecutor.Simulation;

/// <summary>A job of a pipeline file, reduced to what the simulator plays.</summary>
public sealed record PipelineJob(
    string Name,
    string Stage,
    string? Image,
    IReadOnlyList<string> Tags,
    IReadOnlyDictionary<string, string> Variables,
    IReadOnlyList<string> Script,
    IReadOnlyList<string> AfterScript,
    IReadOnlyList<(string Job, bool Artifacts)>? Needs,
    IReadOnlyList<string> ArtifactPaths,
    string When,
    IReadOnlyList<string> RuleConditions,
    long TimeoutSeconds);

/// <summary>The pipeline file cannot be played: it names what and where.</summary>
public sealed class PipelineFileException(string message) : Exception(message);

/// <summary>
/// A .gitlab-ci.yml as the simulator reads it: its stages, global variables and jobs, with
/// `include: local:` files expanded the way GitLab expands CI/CD components (their `spec:
/// inputs:` defaults, the include's `inputs:`, `$[[ inputs.NAME ]]` interpolated), and
/// the including file's job keys merged over the included ones. What the simulator does not play
/// (`extends`, remote includes) is refused by name, never ignored in silence.
/// </summary>
public sealed partial class PipelineDefinition
{
    private static readonly HashSet<string> GlobalKeys = new(StringComparer.Ordinal) { "stages", "variables", "include", "default", "workflow", "image", "services", "cache", "before_script", "after_script" };

    public IReadOnlyList<string> Stages { get; private init; } = [];
    public IReadOnlyDictionary<string, string> Variables { get; private init; } = new Dictionary<string, string>();
    public IReadOnlyList<PipelineJob> Jobs { get; private init; } = [];

    /// <param name="repositoryRoot">Where `include: local:` paths start, as GitLab resolves them from the project's root.</param>
    public static PipelineDefinition Load(string path, string repositoryRoot)
    {
        var root = Mapping(ParseSingle(File.ReadAllText(path), path), path);
        var merged = new YamlMappingNode();
        foreach (var include in Includes(root, path))
            Merge(merged, Mapping(Expand(include.Local, include.Inputs, repositoryRoot), include.Local));
        var own = new YamlMappingNode();
        foreach (var (key, value) in root.Children)
            if (Text(key) != "include")
                own.Add(key, value);
        Merge(merged, own);

        var stages = merged.Children.TryGetValue(new YamlScalarNode("stages"), out var stageNode)
            ? Sequence(stageNode, "stages").Select(stage => Scalar(stage, "stages")).ToList()
            : ["build", "test", "deploy"];
        var variables = merged.Children.TryGetValue(new YamlScalarNode("variables"), out var variableNode) ? VariablesOf(variableNode, "variables") : [];
        var jobs = new List<PipelineJob>();
        foreach (var (key, value) in merged.Children)
        {
            var name = Text(key);
            if (GlobalKeys.Contains(name) || name.StartsWith('.'))
                continue;
            jobs.Add(JobOf(name, Mapping(value, name)));
        }
        foreach (var job in jobs.Where(job => !stages.Contains(job.Stage)))
            throw new PipelineFileException($"job {job.Name}: stage '{job.Stage}' is not one of the pipeline's stages ({string.Join(", ", stages)}).");
        return new PipelineDefinition
        {
            Stages = stages,
            Variables = variables,
            // Stable: within a stage, jobs keep the file's order.
            Jobs = jobs.OrderBy(job => stages.IndexOf(job.Stage)).ToList(),
        };
    }

    private sealed record Include(string Local, YamlMappingNode Inputs);

    private static IEnumerable<Include> Includes(YamlMappingNode root, string path)
    {
        if (!root.Children.TryGetValue(new YamlScalarNode("include"), out var node))
            yield break;
        var entries = node is YamlSequenceNode sequence ? sequence.Children.ToList() : [node];
        foreach (var entry in entries)
        {
            if (entry is YamlScalarNode local)
            {
                yield return new Include(local.Value ?? "", new YamlMappingNode());
                continue;
            }
            var mapping = Mapping(entry, $"{path}: include");
            if (!mapping.Children.TryGetValue(new YamlScalarNode("local"), out var localPath))
                throw new PipelineFileException($"{path}: only `include: local:` is simulated; {string.Join(", ", mapping.Children.Keys.Select(Text))} needs GitLab.");
            var inputs = mapping.Children.TryGetValue(new YamlScalarNode("inputs"), out var given) ? Mapping(given, $"{path}: include inputs") : new YamlMappingNode();
            yield return new Include(Scalar(localPath, "include local"), inputs);
        }
    }

    /// <summary>One component: its spec's inputs, given or defaulted, put into the text of its jobs, then parsed.</summary>
    private static YamlNode Expand(string local, YamlMappingNode given, string repositoryRoot)
    {
        var relative = local.TrimStart('/');
        var full = Path.GetFullPath(Path.Combine(repositoryRoot, relative));
        if (!full.StartsWith(Path.GetFullPath(repositoryRoot).TrimEnd('/') + "/", StringComparison.Ordinal) || !File.Exists(full))
            throw new PipelineFileException($"include {local}: no such file in the repository.");
        var text = File.ReadAllText(full);
        var separator = DocumentSeparator().Match(text);
        if (!separator.Success)
            return ParseSingle(text, local);
        var spec = Mapping(ParseSingle(text[..separator.Index], local), local);
        var declared = spec.Children.TryGetValue(new YamlScalarNode("spec"), out var specNode)
            && Mapping(specNode, local).Children.TryGetValue(new YamlScalarNode("inputs"), out var inputsNode)
            ? Mapping(inputsNode, local) : new YamlMappingNode();
        var values = new Dictionary<string, YamlNode>(StringComparer.Ordinal);
        foreach (var (key, definition) in declared.Children)
        {
            var name = Text(key);
            values[name] = given.Children.TryGetValue(key, out var set) ? set
                : definition is YamlMappingNode options && options.Children.TryGetValue(new YamlScalarNode("default"), out var fallback) ? fallback
                : throw new PipelineFileException($"include {local}: input '{name}' has no default and the include gives none.");
        }
        foreach (var key in given.Children.Keys.Select(Text).Where(key => !values.ContainsKey(key)))
            throw new PipelineFileException($"include {local}: it declares no input '{key}'.");
        return Interpolate(ParseSingle(text[(separator.Index + separator.Length)..], local), values, local);
    }

    /// <summary>
    /// GitLab's interpolation, on the parsed jobs rather than their text: a value that is one
    /// `$[[ inputs.NAME ]]` alone becomes the input itself (an array stays an array); inside a
    /// longer string, or a key, the input's text goes in its place.
    /// </summary>
    private static YamlNode Interpolate(YamlNode node, IReadOnlyDictionary<string, YamlNode> values, string local)
    {
        string Replace(string text) => InputReference().Replace(text, match =>
            values.TryGetValue(match.Groups[1].Value, out var value) ? Render(value) : throw new PipelineFileException($"include {local}: $[[ inputs.{match.Groups[1].Value} ]] is not declared."));
        switch (node)
        {
            case YamlScalarNode scalar:
                var whole = InputReference().Match(scalar.Value ?? "");
                if (whole.Success && whole.Length == (scalar.Value ?? "").Length)
                    return values.TryGetValue(whole.Groups[1].Value, out var value) ? value : throw new PipelineFileException($"include {local}: $[[ inputs.{whole.Groups[1].Value} ]] is not declared.");
                return new YamlScalarNode(Replace(scalar.Value ?? ""));
            case YamlSequenceNode sequence:
                return new YamlSequenceNode(sequence.Children.Select(child => Interpolate(child, values, local)));
            case YamlMappingNode mapping:
                var result = new YamlMappingNode();
                foreach (var (key, value) in mapping.Children)
                    result.Add(Replace(Text(key)), Interpolate(value, values, local));
                return result;
            default:
                return node;
        }
    }

    /// <summary>An input's value as text, where it stands inside a longer string.</summary>
    private static string Render(YamlNode value) => value switch
    {
        YamlScalarNode scalar => scalar.Value ?? "",
        YamlSequenceNode sequence => "[" + string.Join(", ", sequence.Children.Select(Render)) + "]",
        _ => throw new PipelineFileException("an input's value must be a string, a number, a boolean or an array."),
    };

    /// <summary>GitLab's merge of an including file's keys over the included: mappings merge key by key, anything else is replaced.</summary>
    private static void Merge(YamlMappingNode target, YamlMappingNode source)
    {
        foreach (var (key, value) in source.Children)
        {
            if (target.Children.TryGetValue(key, out var existing) && existing is YamlMappingNode existingMapping && value is YamlMappingNode valueMapping)
                Merge(existingMapping, valueMapping);
            else
                target.Children[key] = value;
        }
    }

    private static PipelineJob JobOf(string name, YamlMappingNode job)
    {
        YamlNode? Get(string key) => job.Children.TryGetValue(new YamlScalarNode(key), out var value) ? value : null;
        if (Get("extends") is not null)
            throw new PipelineFileException($"job {name}: extends is not simulated; write the job out in full.");
        var image = Get("image") switch
        {
            null => null,
            YamlScalarNode scalar => scalar.Value,
            YamlMappingNode mapping => mapping.Children.TryGetValue(new YamlScalarNode("name"), out var imageName) ? Scalar(imageName, $"{name}: image") : null,
            _ => throw new PipelineFileException($"job {name}: image is neither a name nor a mapping with one."),
        };
        IReadOnlyList<(string, bool)>? needs = Get("needs") is { } needsNode
            ? Sequence(needsNode, $"{name}: needs").Select(need => need is YamlScalarNode scalar
                ? (scalar.Value ?? "", true)
                : (Scalar(Mapping(need, $"{name}: needs").Children[new YamlScalarNode("job")], $"{name}: needs job"),
                   !(Mapping(need, name).Children.TryGetValue(new YamlScalarNode("artifacts"), out var artifacts) && Scalar(artifacts, name) == "false"))).ToList()
            : null;
        var artifactPaths = Get("artifacts") is YamlMappingNode artifactsNode && artifactsNode.Children.TryGetValue(new YamlScalarNode("paths"), out var paths)
            ? Sequence(paths, $"{name}: artifacts paths").Select(path => Scalar(path, name)).ToList()
            : [];
        var rules = Get("rules") is { } rulesNode
            ? Sequence(rulesNode, $"{name}: rules").Select(rule => Mapping(rule, $"{name}: rules").Children.TryGetValue(new YamlScalarNode("if"), out var condition) ? Scalar(condition, name) : "").ToList()
            : [];
        return new PipelineJob(
            name,
            Get("stage") is { } stage ? Scalar(stage, $"{name}: stage") : "test",
            image,
            Get("tags") is { } tags ? Sequence(tags, $"{name}: tags").Select(tag => Scalar(tag, name)).ToList() : [],
            Get("variables") is { } variables ? VariablesOf(variables, $"{name}: variables") : [],
            Get("script") is { } script ? Commands(script, name) : throw new PipelineFileException($"job {name} has no script."),
            Get("after_script") is { } afterScript ? Commands(afterScript, name) : [],
            needs,
            artifactPaths,
            Get("when") is { } when ? Scalar(when, name) : "on_success",
            rules,
            Get("timeout") is { } timeout ? Seconds(Scalar(timeout, name), name) : 3600);
    }

    private static List<string> Commands(YamlNode node, string job) => node switch
    {
        YamlScalarNode scalar => [scalar.Value ?? ""],
        YamlSequenceNode sequence => sequence.Children.SelectMany(child => Commands(child, job)).ToList(),
        _ => throw new PipelineFileException($"job {job}: a script line is neither text nor a list."),
    };

    private static Dictionary<string, string> VariablesOf(YamlNode node, string where) =>
        Mapping(node, where).Children.ToDictionary(pair => Text(pair.Key), pair => pair.Value switch
        {
            YamlScalarNode scalar => scalar.Value ?? "",
            YamlMappingNode described when described.Children.TryGetValue(new YamlScalarNode("value"), out var value) => Scalar(value, where),
            _ => throw new PipelineFileException($"{where}: {Text(pair.Key)} is neither text nor a mapping with a value."),
        }, StringComparer.Ordinal);

    /// <summary>GitLab's timeout forms the examples use: "90", "45m", "24h", "2h 30m", "30 minutes".</summary>
    private static long Seconds(string text, string job)
    {
        long total = 0;
        var matches = DurationPart().Matches(text.ToLowerInvariant());
        if (matches.Count == 0 || string.Concat(matches.Select(match => match.Value)).Replace(" ", "", StringComparison.Ordinal) != text.ToLowerInvariant().Replace(" ", "", StringComparison.Ordinal))
            throw new PipelineFileException($"job {job}: timeout '{text}' is not a duration such as 45m or 24h.");
        foreach (Match match in matches)
        {
            var number = long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
            total += match.Groups[2].Value switch
            {
                "" or "s" or "sec" or "second" or "seconds" => number,
                "m" or "min" or "minute" or "minutes" => number * 60,
                "h" or "hr" or "hour" or "hours" => number * 3600,
                _ => number * 86400,
            };
        }
        return total;
    }

    private static YamlNode ParseSingle(string text, string where)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlDotNet.Core.YamlException error)
        {
            throw new PipelineFileException($"{where}: not YAML: {error.Message}");
        }
        return stream.Documents.Count == 1 ? stream.Documents[0].RootNode : throw new PipelineFileException($"{where}: one YAML document expected, {stream.Documents.Count} found.");
    }

    private static YamlMappingNode Mapping(YamlNode node, string where) => node as YamlMappingNode ?? throw new PipelineFileException($"{where}: a mapping is expected.");

    private static IEnumerable<YamlNode> Sequence(YamlNode node, string where) => node switch
    {
        YamlSequenceNode sequence => sequence.Children,
        YamlScalarNode scalar => [scalar],
        _ => throw new PipelineFileException($"{where}: a list is expected."),
    };

    private static string Scalar(YamlNode node, string where) => node is YamlScalarNode scalar ? scalar.Value ?? "" : throw new PipelineFileException($"{where}: a single value is expected.");

    private static string Text(YamlNode node) => node is YamlScalarNode scalar ? scalar.Value ?? "" : node.ToString();

    [GeneratedRegex(@"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")]
    private static partial Regex InputReference();

    [GeneratedRegex(@"^---[ \t]*\r?\n", RegexOptions.Multiline)]
    private static partial Regex DocumentSeparator();

    [GeneratedRegex(@"(\d+)\s*([a-z]*)")]
    private static partial Regex DurationPart();
}
