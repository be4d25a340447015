//! `#[derive(Message)]`: a message type's tag from the name it is given and
//! its shape traced once, on first use (see `molt_abi::Shape`).
//!
//! ```ignore
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "kv.Put")]
//! struct Put { key: String, value: u64 }
//! ```
//!
//! Without `name`, the tag is made from the type's path
//! (`module_path!()::Put`), which differs between crates: a type shared
//! by a host and its modules should live in one crate both depend on, or
//! be given a name.

use proc_macro::TokenStream;
use proc_macro_crate::{FoundCrate, crate_name};
use quote::{format_ident, quote};
use syn::{DeriveInput, Expr, ExprLit, Lit, parse_macro_input};

/// Derives `Message`; see the crate docs.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// What `#[message(...)]` says.
#[derive(Default)]
struct Options {
    name: Option<syn::LitStr>,
    krate: Option<syn::Path>,
}

fn options(input: &DeriveInput) -> syn::Result<Options> {
    let mut options = Options::default();
    for attribute in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attribute.parse_nested_meta(|meta| {
            let value = meta.value()?.parse::<Expr>()?;
            let Expr::Lit(ExprLit { lit: Lit::Str(text), .. }) = value else {
                return Err(meta.error("expected a string: #[message(name = \"myapp.Ping\")]"));
            };
            if meta.path.is_ident("name") {
                options.name = Some(text);
            } else if meta.path.is_ident("crate") {
                options.krate = Some(text.parse()?);
            } else {
                return Err(meta.error("unknown option; #[message] takes `name = \"…\"` and `crate = \"…\"`"));
            }
            Ok(())
        })?;
    }
    Ok(options)
}

/// The path of the crate the user reaches molt through.
fn molt_path() -> syn::Path {
    for candidate in ["molt", "molt-module", "molt-abi"] {
        match crate_name(candidate) {
            Ok(FoundCrate::Itself) => return syn::parse_quote!(crate),
            Ok(FoundCrate::Name(name)) => {
                let name = format_ident!("{name}");
                return syn::parse_quote!(::#name);
            }
            Err(_) => {}
        }
    }
    syn::parse_quote!(::molt)
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let options = options(input)?;
    let krate = options.krate.unwrap_or_else(molt_path);
    let ident = &input.ident;
    let name = match &options.name {
        Some(name) => quote!(#name),
        None => quote!(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident))),
    };
    let mut generics = input.generics.clone();
    let parameters: Vec<_> = generics.type_params().map(|p| p.ident.clone()).collect();
    for parameter in &parameters {
        generics.make_where_clause().predicates.push(syn::parse_quote!(#parameter: #krate::Message));
    }
    let (impl_generics, type_generics, where_clause) = generics.split_for_impl();
    // A static in a generic function would be shared by every instance, so
    // a generic type keeps the trait's default (a table keyed by type).
    let shape = if parameters.is_empty() {
        quote! {
            #[inline]
            fn shape() -> #krate::Shape {
                static SHAPE: ::std::sync::OnceLock<#krate::Shape> = ::std::sync::OnceLock::new();
                #krate::Shape::cached::<Self>(&SHAPE)
            }
        }
    } else {
        quote!()
    };
    Ok(quote! {
        impl #impl_generics #krate::Message for #ident #type_generics #where_clause {
            const TAG: #krate::Tag = #krate::Tag::named(#name) #(.with(<#parameters as #krate::Message>::TAG))*;
            #shape
        }
    })
}
